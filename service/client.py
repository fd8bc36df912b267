"""A Python client for the annotune REST API (``/api/v1``), used by the CLI and the walkthrough.

    from service.client import Client
    api = Client("http://127.0.0.1:8000", token="atk_...")          # or Client.from_config()
    project = api.create_project("keywords")
    docs = api.upload_documents(project["id"], ["a.pdf", "b.md"])
    api.wait_documents(project["id"], [d["document_id"] for d in docs])

Every call returns the API's JSON (plain dicts, as documented at ``/docs``). A refused call
raises :class:`ApiError` with the API's error envelope (``{"error": {code, message, details}}``);
``wait_*`` helpers poll a job until it ends, draw a progress bar on a terminal (``rich``, on
stderr), and raise :class:`JobFailed` when it ends failed or cancelled and :class:`WaitTimeout`
when it does not end in time. Nothing here imports the server's code: the client needs only
``httpx`` (and ``rich`` for progress bars).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx

__all__ = ["ApiError", "Client", "ClientError", "JobFailed", "WaitTimeout", "config_path",
           "format_comparison", "load_config", "password_login", "save_config"]

Json = dict[str, Any]
Upload = str | os.PathLike[str] | tuple[str, bytes]
FINISHED = ("succeeded", "failed", "cancelled")


class ClientError(Exception):
    """Base of the client's errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ApiError(ClientError):
    """The API refused a call: ``status`` (HTTP), ``code``, ``message``, ``details`` (the
    envelope's ``[{field, message}]``)."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None,
                 body: Any = None):
        self.status, self.code, self.message = status, code, message
        self.details, self.body = list(details or []), body
        where = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in self.details
                          if isinstance(d, dict) and d.get("field"))
        super().__init__(f"{status} {code}: {message}" + (f" ({where})" if where else ""))

    @classmethod
    def from_response(cls, resp: httpx.Response) -> ApiError:
        try:
            body = resp.json()
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return cls(resp.status_code, str(err.get("code") or "error"),
                       str(err.get("message") or resp.reason_phrase), err.get("details"), body)
        text = resp.text[:300] if body is None else json.dumps(body)[:300]
        return cls(resp.status_code, "http_error", text or resp.reason_phrase, [], body)


class JobFailed(ClientError):
    """A job ended without succeeding; ``job`` is its last state."""

    exit_code = 3

    def __init__(self, what: str, job: Json):
        self.job = job
        reason = job.get("error") or ""
        super().__init__(f"{what} {job.get('id')} ended {job.get('status')}"
                         + (f": {reason}" if reason else ""))


class WaitTimeout(ClientError):
    exit_code = 4


# -- the CLI's config file ----------------------------------------------------------------------

def config_path() -> Path:
    """``$ANNOTUNE_CONFIG`` or ``~/.config/annotune/cli.json``."""
    env = os.environ.get("ANNOTUNE_CONFIG")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "annotune" / "cli.json"


def load_config(path: Path | None = None) -> Json:
    path = path or config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(values: Json, path: Path | None = None) -> Path:
    """Merge ``values`` into the config file, readable by its owner only (it holds a token)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**load_config(path), **{k: v for k, v in values.items() if v is not None}}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return path


# -- progress -------------------------------------------------------------------------------------

class _Bar:
    """One rich progress bar on stderr, or nothing when not on a terminal / turned off."""

    def __init__(self, label: str, enabled: bool):
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=False)
            self.progress.start()
            self.task = self.progress.add_task(label, total=None)
        self.label = label

    def update(self, done: float | None, total: float | None, note: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done or 0, total=total or None,
                                 description=f"{self.label} {note}".strip())

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


# -- the client -------------------------------------------------------------------------------

class Client:
    """Typed calls over ``/api/v1``. ``progress``: draw bars while waiting (default: when
    stderr is a terminal)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 120.0,
                 progress: bool | None = None, poll: float = 1.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout,
                                 transport=transport)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.poll = poll

    @classmethod
    def from_config(cls, url: str | None = None, token: str | None = None, **kw: Any) -> Client:
        """Options, then ``$ANNOTUNE_URL`` / ``$ANNOTUNE_TOKEN``, then the config file."""
        cfg = load_config()
        url = url or os.environ.get("ANNOTUNE_URL") or cfg.get("url")
        token = token or os.environ.get("ANNOTUNE_TOKEN") or cfg.get("token")
        if not url:
            raise ClientError("no server: run `annotune login URL ...` or set ANNOTUNE_URL")
        return cls(url, token, **kw)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One call; the decoded JSON (None for 204). Raises :class:`ApiError`."""
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            raise ApiError.from_response(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        if "json" in resp.headers.get("content-type", ""):
            return resp.json()
        return resp.content

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def pages(self, path: str, *, limit: int = 200, **params: Any) -> Iterator[Json]:
        """Every item of a keyset-paginated list."""
        cursor = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def wait(self, fetch: Callable[[], Json], *, what: str, done: Callable[[Json], bool],
             ok: Callable[[Json], bool], count: Callable[[Json], tuple[Any, Any]] | None = None,
             timeout: float = 3600.0) -> Json:
        """Poll ``fetch`` until ``done``; raise :class:`JobFailed` unless ``ok``."""
        bar = _Bar(what, self.progress)
        deadline = time.monotonic() + timeout
        try:
            while True:
                state = fetch()
                if count is not None:
                    bar.update(*count(state), note=str(state.get("status", "")))
                if done(state):
                    if not ok(state):
                        raise JobFailed(what, state)
                    return state
                if time.monotonic() > deadline:
                    raise WaitTimeout(f"{what} {state.get('id')} still {state.get('status')} "
                                      f"after {timeout:.0f} s")
                time.sleep(self.poll)
        finally:
            bar.close()

    def _job(self, path: str, what: str, timeout: float, count: Any = None,
             finished: Iterable[str] = FINISHED, good: Iterable[str] = ("succeeded",)) -> Json:
        finished, good = tuple(finished), tuple(good)
        return self.wait(lambda: self.get(path), what=what, count=count, timeout=timeout,
                         done=lambda s: s["status"] in finished, ok=lambda s: s["status"] in good)

    # -- account and projects -----------------------------------------------------------------

    def me(self) -> Json:
        return self.get("/me")

    def create_token(self, name: str, *, scopes: list[str] | None = None,
                     expires_in_days: int | None = None) -> Json:
        return self.post("/tokens", {"name": name, "scopes": scopes,
                                     "expires_in_days": expires_in_days})

    def list_tokens(self) -> list[Json]:
        """Your API tokens (never their secrets), revoked and expired ones too."""
        return list(self.pages("/tokens"))

    def revoke_token(self, token_id: int) -> Json:
        return self.request("DELETE", f"/tokens/{token_id}")

    def create_project(self, name: str, description: str = "") -> Json:
        return self.post("/projects", {"name": name, "description": description})

    def get_project(self, project_id: int) -> Json:
        return self.get(f"/projects/{project_id}")

    def list_projects(self) -> list[Json]:
        return list(self.pages("/projects"))

    # -- documents ----------------------------------------------------------------------------

    def upload_documents(self, project_id: int, files: Iterable[Upload], *,
                         batch: int = 50) -> list[Json]:
        """Upload files (paths, or ``(name, bytes)``), ``batch`` per request; one result each."""
        results: list[Json] = []
        pending = list(files)
        bar = _Bar("upload", self.progress and len(pending) > batch)
        try:
            for start in range(0, len(pending), batch):
                parts = []
                for item in pending[start:start + batch]:
                    if isinstance(item, tuple):
                        name, data = item
                    else:
                        name, data = Path(item).name, Path(item).read_bytes()
                    parts.append(("files", (name, data)))
                results += self.request("POST", f"/projects/{project_id}/documents",
                                        files=parts)["results"]
                bar.update(len(results), len(pending))
        finally:
            bar.close()
        return results

    def list_documents(self, project_id: int, status: str | None = None) -> list[Json]:
        return list(self.pages(f"/projects/{project_id}/documents", status=status))

    def wait_documents(self, project_id: int, ids: Iterable[int], *,
                       timeout: float = 1800.0) -> list[Json]:
        """Wait until every document in ``ids`` is parsed (or failed: raises JobFailed)."""
        wanted = set(ids)

        def fetch() -> Json:
            docs = [d for d in self.list_documents(project_id) if d["id"] in wanted]
            ended = [d for d in docs if d["status"] in ("parsed", "failed")]
            failed = [d for d in docs if d["status"] == "failed"]
            status = "failed" if failed else ("parsed" if len(ended) == len(wanted) else "parsing")
            return {"id": f"{len(wanted)} document(s)", "status": status, "done": len(ended),
                    "total": len(wanted), "documents": docs,
                    "error": failed[0].get("parse_error") if failed else None}

        state = self.wait(fetch, what="parse", done=lambda s: s["status"] != "parsing",
                          ok=lambda s: s["status"] == "parsed",
                          count=lambda s: (s["done"], s["total"]), timeout=timeout)
        return state["documents"]

    # -- generation ---------------------------------------------------------------------------

    def list_templates(self, project_id: int) -> list[Json]:
        return list(self.pages(f"/projects/{project_id}/templates"))

    def create_template(self, project_id: int, *, name: str, text: str, kind: str = "custom",
                        lang: str = "en", parser: Json | None = None) -> Json:
        return self.post(f"/projects/{project_id}/templates", {
            "name": name, "kind": kind, "lang": lang, "text": text,
            "parser": parser or {"kind": "text"}})

    def list_providers(self, project_id: int) -> list[Json]:
        return list(self.pages(f"/projects/{project_id}/providers"))

    def create_provider(self, project_id: int, **body: Any) -> Json:
        return self.post(f"/projects/{project_id}/providers", body)

    def local_provider(self, project_id: int, model: str = "smollm2-135m-instruct") -> Json:
        """The in-worker provider of ``model`` (the built-in SmolLM2 one by default)."""
        for p in self.list_providers(project_id):
            if p["kind"] == "local" and p["model"] == model:
                return p
        raise ClientError(f"no local provider for {model} in project {project_id}")

    def generate(self, project_id: int, *, template_id: int, provider_id: int,
                 document_ids: list[int] | None = None, params: Json | None = None,
                 samples_per_chunk: int = 1) -> Json:
        return self.post(f"/projects/{project_id}/generation-jobs", {
            "template_id": template_id, "provider_id": provider_id, "document_ids": document_ids,
            "params": params or {}, "samples_per_chunk": samples_per_chunk})

    def wait_generation(self, project_id: int, job_id: int, *, timeout: float = 7200.0) -> Json:
        return self._job(f"/projects/{project_id}/generation-jobs/{job_id}", "generation",
                         timeout, count=lambda s: (s["done_units"] + s["failed_units"],
                                                   s["total_units"]))

    # -- samples and review -------------------------------------------------------------------

    def list_samples(self, project_id: int, **filters: Any) -> list[Json]:
        return list(self.pages(f"/projects/{project_id}/samples", **filters))

    def update_sample(self, project_id: int, sample: Json, **changes: Any) -> Json:
        """Edit a sample (messages, tags, comment...) from the version you read."""
        return self.request("PATCH", f"/projects/{project_id}/samples/{sample['id']}",
                            json={**changes, "version": sample["version"]})

    def set_status(self, project_id: int, sample: Json, status: str,
                   reason: str | None = None) -> Json:
        return self.post(f"/projects/{project_id}/samples/{sample['id']}/status",
                         {"status": status, "reason": reason, "version": sample["version"]})

    def bulk(self, project_id: int, filter: Json, *, status: str | None = None,
             add_tags: list[str] | None = None, timeout: float = 1800.0) -> Json:
        """Change every sample the filter matches; waits for a background bulk job (202)."""
        result = self.post(f"/projects/{project_id}/samples-bulk", {
            "filter": filter, "status": status, "add_tags": add_tags or []})
        url = result.get("status_url")
        if url:
            path = url.removeprefix("/api/v1")
            result = self._job(path, "bulk change", timeout)
        return result

    def import_samples(self, project_id: int, filename: str, data: bytes, *,
                       mapping: Json | None = None, fmt: str | None = None,
                       mode: str = "strict") -> Json:
        form = {"mode": mode}
        if mapping is not None:
            form["mapping"] = json.dumps(mapping)
        if fmt:
            form["format"] = fmt
        return self.request("POST", f"/projects/{project_id}/imports",
                            files={"file": (filename, data)}, data=form)

    def wait_import(self, project_id: int, import_id: int, *, timeout: float = 1800.0) -> Json:
        return self._job(f"/projects/{project_id}/imports/{import_id}", "import", timeout,
                         finished=("succeeded", "failed", "rejected", "cancelled"))

    # -- datasets -----------------------------------------------------------------------------

    def create_dataset(self, project_id: int, name: str, description: str = "") -> Json:
        return self.post(f"/projects/{project_id}/datasets",
                         {"name": name, "description": description})

    def freeze(self, project_id: int, dataset_id: int, *, split: Json | None = None,
               seed: int = 0, stratify_by: str | None = None, filter: Json | None = None) -> Json:
        body: Json = {"seed": seed, "stratify_by": stratify_by}
        if split is not None:
            body["split"] = split
        if filter is not None:
            body["filter"] = filter
        return self.post(f"/projects/{project_id}/datasets/{dataset_id}/versions", body)

    def version_path(self, project_id: int, dataset_id: int, version_id: int) -> str:
        return f"/projects/{project_id}/datasets/{dataset_id}/versions/{version_id}"

    def wait_version(self, project_id: int, dataset_id: int, version_id: int, *,
                     timeout: float = 1800.0) -> Json:
        return self._job(self.version_path(project_id, dataset_id, version_id), "version",
                         timeout, finished=("ready", "failed"), good=("ready",))

    def export(self, project_id: int, dataset_id: int, version_id: int, fmt: str) -> Json:
        return self.post(self.version_path(project_id, dataset_id, version_id) + "/exports",
                         {"format": fmt})

    def wait_export(self, project_id: int, dataset_id: int, version_id: int, fmt: str, *,
                    timeout: float = 1800.0) -> Json:
        path = self.version_path(project_id, dataset_id, version_id) + f"/exports/{fmt}"
        return self._job(path, f"{fmt} export", timeout, finished=("ready", "failed"),
                         good=("ready",), count=lambda s: (s.get("progress"), 100))

    def download_export(self, project_id: int, dataset_id: int, version_id: int, fmt: str,
                        dest: str | os.PathLike[str]) -> Path:
        """The export's zip, written to ``dest``."""
        data = self.get(self.version_path(project_id, dataset_id, version_id)
                        + f"/exports/{fmt}/download")
        path = Path(dest)
        path.write_bytes(data)
        return path

    # -- training -----------------------------------------------------------------------------

    def train(self, project_id: int, *, dataset_version_id: int, base_model: str,
              method: str = "lora", hyperparameters: Json | None = None, **options: Any) -> Json:
        return self.post(f"/projects/{project_id}/training-jobs", {
            "dataset_version_id": dataset_version_id, "base_model": base_model,
            "method": method, "hyperparameters": hyperparameters or {}, **options})

    def wait_training(self, project_id: int, job_id: int, *, timeout: float = 7200.0) -> Json:
        return self._job(f"/projects/{project_id}/training-jobs/{job_id}", "training", timeout,
                         count=lambda s: (s.get("step"), s.get("total_steps")))

    def training_losses(self, project_id: int, job_id: int) -> list[tuple[int, float]]:
        events = self.pages(f"/projects/{project_id}/training-jobs/{job_id}/events")
        return [(e["step"], e["loss"]) for e in events
                if e["kind"] == "metrics" and e["loss"] is not None]

    def register_provider(self, project_id: int, job_id: int) -> Json:
        """The training job's fine-tuned model as a local provider of the project."""
        return self.post(f"/projects/{project_id}/training-jobs/{job_id}/provider")

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, project_id: int, *, dataset_version_id: int, model_kind: str,
                 split: str = "test", name: str = "", base_model: str | None = None,
                 training_job_id: int | None = None, provider_id: int | None = None,
                 generation: Json | None = None, metrics: list[str] | None = None,
                 metric_options: Json | None = None) -> Json:
        body: Json = {"dataset_version_id": dataset_version_id, "model_kind": model_kind,
                      "split": split, "name": name, "base_model": base_model,
                      "training_job_id": training_job_id, "provider_id": provider_id}
        for key, value in (("generation", generation), ("metrics", metrics),
                           ("metric_options", metric_options)):
            if value is not None:
                body[key] = value
        return self.post(f"/projects/{project_id}/eval-runs", body)

    def wait_eval(self, project_id: int, run_id: int, *, timeout: float = 7200.0) -> Json:
        return self._job(f"/projects/{project_id}/eval-runs/{run_id}", "evaluation", timeout,
                         count=lambda s: (s["done"] + s["failed"], s["total"]))

    def compare(self, project_id: int, run_ids: list[int], *, baseline: int | None = None,
                n_resamples: int = 2000, seed: int = 0) -> Json:
        return self.get(f"/projects/{project_id}/eval-compare",
                        runs=",".join(str(r) for r in run_ids), baseline=baseline,
                        n_resamples=n_resamples, seed=seed)


def format_comparison(cmp: dict[str, Any]) -> str:
    """The comparison as text: one line per candidate and metric, with the paired bootstrap
    interval of the difference."""
    names = {r["id"]: r.get("name") or r["id"] for r in cmp["runs"]}
    lines = [(f"baseline: run {cmp['baseline']} ({names.get(cmp['baseline'])}), "
              f"{int(cmp['confidence'] * 100)}% paired bootstrap, {cmp['n_resamples']} resamples")]
    for comp in cmp["comparisons"]:
        lines.append(f"run {comp['id']} ({names.get(comp['id'])}):")
        for metric, m in comp["metrics"].items():
            lines.append(f"  {metric:18s} {_num(m.get('baseline_mean'), '9.4f')} -> "
                         f"{_num(m.get('mean'), '9.4f')}  delta {_num(m.get('delta'), '+.4f')}  "
                         f"[{_num(m.get('ci_low'), '+.4f')}, {_num(m.get('ci_high'), '+.4f')}]  "
                         f"n={m.get('n')} win/tie/loss {m.get('win')}/{m.get('tie')}/{m.get('loss')}")
    return "\n".join(lines)


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def password_login(url: str, email: str, password: str, *, token_name: str = "annotune-cli",
                   transport: httpx.BaseTransport | None = None) -> str:
    """Sign in as the browser does (login form with its CSRF cookie), create an API token with
    that session, sign out; returns the token's secret (shown once)."""
    import re

    with httpx.Client(base_url=url.rstrip("/"), timeout=30, transport=transport) as web:
        form = web.get("/login")
        found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        if form.status_code != 200 or not found:
            raise ClientError(f"{url}/login did not offer a login form ({form.status_code})")
        resp = web.post("/login", data={"email": email, "password": password,
                                        "csrf_token": found.group(1), "next": "/projects"})
        if resp.status_code != 303:
            message = re.search(r'class="flash error"[^>]*>([^<]+)<', resp.text)
            raise ApiError(resp.status_code, "login_failed",
                           message.group(1).strip() if message else "login refused")
        page = web.get("/projects")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        headers = {"X-CSRF-Token": csrf.group(1)} if csrf else {}
        created = web.post("/api/v1/tokens", json={"name": token_name}, headers=headers)
        if created.status_code >= 400:
            raise ApiError.from_response(created)
        web.post("/logout", data={"csrf_token": csrf.group(1) if csrf else ""})
        return str(created.json()["token"])
