"""Admin user management: the users list, invitations and one-time set-password links."""
