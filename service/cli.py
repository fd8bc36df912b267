"""``annotune`` command line: run the product, the API, workers, migrations, users and tokens."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import typer

app = typer.Typer(help="annotune: documents → reviewed datasets → QLoRA → evaluation",
                  no_args_is_help=True)
token_app = typer.Typer(help="API tokens", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _settings():
    from service.core.config import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    return settings


@app.command()
def migrate(revision: str = typer.Argument("head")) -> None:
    """Apply database migrations (``alembic upgrade``)."""
    from service.core import migrate as m

    settings = _settings()
    m.upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {revision}")


def _ensure_admin(email: str | None, password: str | None) -> None:
    from sqlalchemy import func, select

    from service.auth import service as auth_service
    from service.core.db import session_scope
    from service.models import User

    with session_scope() as db:
        if db.scalar(select(func.count()).select_from(User)):
            return
        email = email or "admin@localhost"
        generated = not password
        password = password or secrets.token_urlsafe(12)
        auth_service.create_user(db, email=email, password=password, name="admin", is_admin=True)
    typer.echo("=" * 60)
    typer.echo(f"first admin account: {email}")
    if generated:
        typer.echo(f"password (shown once): {password}")
    else:
        typer.echo("password: from ANNOTUNE_FIRST_ADMIN_PASSWORD")
    typer.echo("=" * 60)


@app.command("create-user")
def create_user(email: str,
                password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                             help="the password (asked for, hidden, when not given)"),
                name: str = "", admin: bool = typer.Option(False, help="make the user an administrator")
                ) -> None:
    """Create a user (the password follows the same policy as the API and the invitation page)."""
    from service.auth import service as auth_service
    from service.core.db import session_scope
    from service.core.errors import AppError
    from service.users.passwords import check_password

    _settings()
    try:
        check_password(password, email=email)
        with session_scope() as db:
            user = auth_service.create_user(db, email=email, password=password, name=name, is_admin=admin)
            typer.echo(f"created user {user.id} <{user.email}>{' (admin)' if admin else ''}")
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@token_app.command("create")
def token_create(email: str, name: str = typer.Option("cli", help="a label for the token")) -> None:
    """Create an API token for a user and print its secret once."""
    from service.auth import service as auth_service
    from service.core.db import session_scope

    _settings()
    with session_scope() as db:
        user = auth_service.get_user_by_email(db, email)
        if user is None:
            typer.echo(f"no user {email}", err=True)
            raise typer.Exit(2)
        _token, secret = auth_service.create_token(db, user=user, name=name)
    typer.echo(secret)


@app.command()
def api(host: str | None = None, port: int | None = None, reload: bool = False) -> None:
    """Serve the web app and REST API with uvicorn."""
    import uvicorn

    settings = _settings()
    uvicorn.run("service.main:create_app", factory=True, host=host or settings.host,
                port=port or settings.port, reload=reload, log_config=None)


def _worker_argv(queues: str, concurrency: int, pool: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues,
            "-c", str(concurrency), "--pool", pool, "--loglevel", "INFO", "-n",
            f"annotune-{queues.replace(',', '-')}@%h", "--without-gossip", "--without-mingle"]


@app.command()
def worker(queues: str = typer.Option("ingest,generate", help="comma-separated: ingest,generate,gpu"),
           concurrency: int = 2, pool: str = "prefork") -> None:
    """Run a Celery worker (use ``--queues gpu --concurrency 1`` on a GPU machine)."""
    _settings()
    os.execv(sys.executable, _worker_argv(queues, concurrency, pool))


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if `annotune up` dies without cleaning up (e.g. SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@app.command()
def up(host: str | None = None, port: int | None = None,
       admin_email: str | None = typer.Option(None, envvar="ANNOTUNE_FIRST_ADMIN_EMAIL"),
       admin_password: str | None = typer.Option(None, envvar="ANNOTUNE_FIRST_ADMIN_PASSWORD"),
       worker_concurrency: int = 2) -> None:
    """Start everything on this machine: migrations, first admin, one worker, the web app."""
    settings = _settings()
    typer.echo(f"data dir: {settings.data_dir.resolve()}")
    typer.echo(f"database: {settings.resolved_database_url.split('@')[-1]}")
    typer.echo(f"broker:   {settings.resolved_broker_url}")
    migrate("head")
    _ensure_admin(admin_email, admin_password)
    worker_proc = subprocess.Popen(_worker_argv("ingest,generate,gpu", worker_concurrency, "prefork"),
                                   start_new_session=True, preexec_fn=_die_with_parent)
    (settings.data_dir / "worker.pid").write_text(str(worker_proc.pid))

    def _terminate(signum, _frame):  # uvicorn re-raises SIGTERM after its shutdown: clean up
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    url = f"http://{host or settings.host}:{port or settings.port}"
    typer.echo(f"annotune is starting at {url}  (Ctrl-C stops everything)")
    try:
        api(host=host, port=port, reload=False)
    finally:
        typer.echo("stopping worker…")
        try:
            os.killpg(worker_proc.pid, signal.SIGTERM)
            deadline = time.time() + 20
            while worker_proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            if worker_proc.poll() is None:
                os.killpg(worker_proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    app()
