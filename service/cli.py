"""``annotune`` command line: run the product, the API, workers, migrations, users and tokens."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="annotune: documents → reviewed datasets → QLoRA → evaluation",
                  no_args_is_help=True)
token_app = typer.Typer(help="API tokens", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"annotune {version('annotune')}")
        except PackageNotFoundError:  # a source checkout that was never installed
            typer.echo("annotune (not installed)")
        raise typer.Exit()


@app.callback()
def _main(_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit")]
          = False) -> None:
    """annotune: documents → reviewed datasets → QLoRA → evaluation."""


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


def _token_row(t: dict) -> str:
    """One line of ``token list`` (a token read from the database or the API)."""
    def stamp(value, fmt: str = "%Y-%m-%d %H:%M") -> str:
        from datetime import datetime

        when = datetime.fromisoformat(value) if isinstance(value, str) else value
        return f"{when:{fmt}}"

    state = ("revoked" if t["revoked_at"] else
             f"expires {stamp(t['expires_at'], '%Y-%m-%d')}" if t["expires_at"] else "active")
    used = stamp(t["last_used_at"]) if t["last_used_at"] else "never"
    return (f"{t['id']}\t{t['prefix']}\t{t['name']}\t{','.join(t['scopes'])}\t"
            f"{stamp(t['created_at'])}\t{used}\t{state}")


TOKEN_HEADER = "id\tprefix\tname\tscopes\tcreated\tlast used\tstate"
API_URL = typer.Option(None, "--url", envvar="ANNOTUNE_URL",
                       help="with --api: the server (default: from `annotune login`)")
API_TOKEN = typer.Option(None, "--token", envvar="ANNOTUNE_TOKEN",
                         help="with --api: your API token (default: from `annotune login`)")


def _api_client(url: str | None, token: str | None):
    from service.client import Client, ClientError

    try:
        return Client.from_config(url, token, progress=False)
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@token_app.command("list")
def token_list(email: Annotated[str | None, typer.Argument(
                   help="whose tokens, read from this server's database; without it: your own, "
                        "through the API (`annotune login`, --url/--token)")] = None,
               url: str | None = API_URL, token: str | None = API_TOKEN) -> None:
    """List API tokens (never their secrets): id, prefix, name, scopes, state."""
    if email is None:
        from service.client import ClientError

        with _api_client(url, token) as api:
            try:
                rows = api.list_tokens()
            except ClientError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(exc.exit_code) from None
        typer.echo(TOKEN_HEADER)
        for row in rows:
            typer.echo(_token_row(row))
        return
    from service.auth import schemas
    from service.auth import service as auth_service
    from service.core.db import session_scope

    _settings()
    with session_scope() as db:
        user = auth_service.get_user_by_email(db, email)
        if user is None:
            typer.echo(f"no user {email}", err=True)
            raise typer.Exit(2)
        typer.echo(TOKEN_HEADER)
        for t in auth_service.list_tokens(db, user=user):
            typer.echo(_token_row(schemas.TokenRead.model_validate(t).model_dump()))


@token_app.command("revoke")
def token_revoke(token_ref: Annotated[str, typer.Argument(metavar="TOKEN",
                                                          help="the token's id or prefix")],
                 api: bool = typer.Option(False, "--api", help=(
                     "revoke one of your own tokens through the API (`annotune login`, "
                     "--url/--token) instead of in this server's database")),
                 url: str | None = API_URL, token: str | None = API_TOKEN) -> None:
    """Revoke an API token (by id, or by the prefix shown in `token list`): it stops working."""
    if api:
        from service.client import ClientError

        with _api_client(url, token) as client:
            try:
                found = [t for t in client.list_tokens()
                         if str(t["id"]) == token_ref or t["prefix"] == token_ref]
                if not found:
                    typer.echo(f"no token {token_ref}", err=True)
                    raise typer.Exit(2)
                row = found[0]
                client.revoke_token(row["id"])
            except ClientError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(exc.exit_code) from None
        already = row["revoked_at"] is not None
        typer.echo(f"token {row['id']} ({row['prefix']}) "
                   f"{'was already revoked' if already else 'revoked'}")
        return
    from sqlalchemy import select

    from service.auth import service as auth_service
    from service.core.db import session_scope
    from service.models import ApiToken

    _settings()
    with session_scope() as db:
        where = ApiToken.id == int(token_ref) if token_ref.isdigit() else ApiToken.prefix == token_ref
        found_row = db.scalars(select(ApiToken).where(where)).first()
        if found_row is None:
            typer.echo(f"no token {token_ref}", err=True)
            raise typer.Exit(2)
        already = found_row.revoked_at is not None
        auth_service.revoke_token(db, user=found_row.user, token_id=found_row.id)
        typer.echo(f"token {found_row.id} ({found_row.prefix}) "
                   f"{'was already revoked' if already else 'revoked'}")


@app.command()
def backup(path: Annotated[Path, typer.Argument(help="the archive to write (.tar.gz)")]) -> None:
    """Back up the database and the data folder into one archive (a consistent snapshot)."""
    from service.core import backup as backup_mod
    from service.core.db import get_engine

    _settings()
    try:
        manifest = backup_mod.backup(get_engine(), path)
    except backup_mod.BackupError as exc:
        typer.echo(f"backup failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    rows = sum(manifest["tables"].values())
    files = sum(1 for m in manifest["members"] if m.startswith("files/"))
    typer.echo(f"wrote {path}: {rows} rows in {len(manifest['tables'])} tables, {files} files, "
               f"schema {manifest['revision']}")


@app.command()
def restore(path: Annotated[Path, typer.Argument(help="an archive written by `annotune backup`")]
            ) -> None:
    """Restore a backup into an empty database and the data folder (same secret key)."""
    from service.core import backup as backup_mod
    from service.core.db import get_engine

    _settings()
    try:
        manifest = backup_mod.restore(get_engine(), path)
    except backup_mod.BackupError as exc:
        typer.echo(f"restore failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"restored {sum(manifest['tables'].values())} rows and the data folder from "
               f"{path} (schema {manifest['revision']})")


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
    """Start everything on this machine: migrations, first admin, two supervised workers (one for
    parsing, imports, builds, exports and endpoint generation; one for heavy local work), the web
    app."""
    settings = _settings()
    typer.echo(f"data dir: {settings.data_dir.resolve()}")
    typer.echo(f"database: {settings.resolved_database_url.split('@')[-1]}")
    typer.echo(f"broker:   {settings.resolved_broker_url}")
    migrate("head")
    _ensure_admin(admin_email, admin_password)
    # two workers, so heavy local work (the in-worker model, training, local evaluation) on
    # ``gpu`` never holds up parsing, imports, builds and exports on ``ingest``/``generate``;
    # a supervisor restarts one that exits (a broker restart it could not ride out, a crash)
    supervisor = _Supervisor(settings.data_dir, [
        ("worker", _worker_argv("ingest,generate", worker_concurrency, "prefork")),
        ("worker-gpu", _worker_argv("gpu", 1, "prefork")),
    ])
    supervisor.start()

    def _terminate(signum, _frame):  # uvicorn re-raises SIGTERM after its shutdown: clean up
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    url = f"http://{host or settings.host}:{port or settings.port}"
    typer.echo(f"annotune is starting at {url}  (Ctrl-C stops everything)")
    try:
        api(host=host, port=port, reload=False)
    finally:
        typer.echo("stopping workers…")
        supervisor.stop()


class _Supervisor:
    """Keeps the worker processes of ``annotune up`` running: one that exits is started again
    after a back-off (1 s, doubling to 30 s, reset after a minute of uptime). Each worker's pid
    is in ``<data dir>/<name>.pid``."""

    def __init__(self, data_dir: Path, workers: list[tuple[str, list[str]]]):
        import threading

        self.data_dir, self.workers = data_dir, workers
        self.procs: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="annotune-supervisor",
                                        daemon=True)

    def _spawn(self, name: str, argv: list[str]) -> None:
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509 - prctl only
        self.procs[name] = proc
        (self.data_dir / f"{name}.pid").write_text(str(proc.pid))

    def start(self) -> None:
        for name, argv in self.workers:
            self._spawn(name, argv)
        self._thread.start()

    def _watch(self) -> None:
        delay = dict.fromkeys(self.procs, 1.0)
        started = dict.fromkeys(self.procs, time.monotonic())
        while not self._stop.wait(1.0):
            for name, argv in self.workers:
                proc = self.procs[name]
                if proc.poll() is None:
                    if time.monotonic() - started[name] > 60:
                        delay[name] = 1.0
                    continue
                typer.echo(f"{name} exited with {proc.returncode}; restarting in "
                           f"{delay[name]:.0f} s", err=True)
                if self._stop.wait(delay[name]):
                    return
                delay[name] = min(30.0, delay[name] * 2)
                started[name] = time.monotonic()
                self._spawn(name, argv)

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        for proc in self.procs.values():
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _rest_commands() -> None:
    # login, docs upload, generate, dataset freeze/export, train, eval, compare, serve (REST)
    from service import cli_rest

    cli_rest.register(app)


_rest_commands()

if __name__ == "__main__":
    app()
