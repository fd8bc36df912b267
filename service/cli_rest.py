"""``annotune`` commands that drive a running annotune over REST (``service.client``).

``annotune login URL`` stores the server and an API token in ``~/.config/annotune/cli.json``
(``$ANNOTUNE_CONFIG``); every other command here reads them from there, or from ``--url`` /
``--token`` / ``$ANNOTUNE_URL`` / ``$ANNOTUNE_TOKEN``; ``-p/--project`` (``$ANNOTUNE_PROJECT``,
or the one saved with ``login --project``) names the project. Waiting commands draw progress
bars on stderr when it is a terminal; ``--json`` prints the result as JSON on stdout.

Exit codes: 0 done; 1 the API refused the call or the server cannot be reached (the API's
error on stderr); 2 bad usage; 3 a job ended failed or cancelled; 4 a wait timed out;
5 ``compare --require-better``: the interval of the difference does not exclude 0;
6 ``serve``: vLLM is not installed on this machine.
"""
from __future__ import annotations

import functools
import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from service import client as api_client
from service.client import ApiError, Client, ClientError

docs_app = typer.Typer(help="documents", no_args_is_help=True)
samples_app = typer.Typer(help="samples: import, bulk changes", no_args_is_help=True)
dataset_app = typer.Typer(help="dataset versions: freeze, export", no_args_is_help=True)
projects_app = typer.Typer(help="projects", no_args_is_help=True)
provider_app = typer.Typer(help="providers: a training job's model as a provider",
                           no_args_is_help=True)

URL = typer.Option(None, "--url", envvar="ANNOTUNE_URL", help="server (default: from login)")
TOKEN = typer.Option(None, "--token", envvar="ANNOTUNE_TOKEN", help="API token")
PROJECT = typer.Option(None, "-p", "--project", envvar="ANNOTUNE_PROJECT", help="project id")
JSON = typer.Option(False, "--json", help="print the result as JSON on stdout")
WAIT = typer.Option(True, "--wait/--no-wait", help="wait until the job ends")
TIMEOUT = typer.Option(7200.0, help="seconds to wait at most")
FILES = typer.Argument(..., exists=True, dir_okay=False, help="files to upload")
FILE = typer.Argument(..., exists=True, dir_okay=False)
PARAMS = typer.Option([], "--param", help="job params as key=value (JSON values)")
ADD_TAGS = typer.Option([], "--add-tag", help="tags to add")
FILTER_STATUS = typer.Option([], "--status", help="filter: current status")
VERSION_TAGS = typer.Option([], "--tag", help="only samples with one of these tags")
VERSION_STATUS = typer.Option(["accepted"], "--status", help="sample statuses")
OUT = typer.Option(None, help="write the zip here")
HYPERPARAMETERS = typer.Option([], "--hp", help="hyperparameters as key=value")
RUNS = typer.Argument(..., help="run ids; the first is the baseline")
NOT_BETTER, NO_VLLM = 5, 6


class Ctx:
    def __init__(self, url: str | None, token: str | None, project: int | None, as_json: bool):
        self.api = Client.from_config(url, token)
        self.as_json = as_json
        saved = api_client.load_config().get("project")
        self._project = project if project is not None else saved

    @property
    def project(self) -> int:
        if self._project is None:
            raise typer.BadParameter("name a project with -p/--project (or login --project)")
        return int(self._project)

    def out(self, value: Any, text: str | Callable[[], str]) -> None:
        if self.as_json:
            typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))
        else:
            typer.echo(text() if callable(text) else text)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Client errors become a message on stderr (the API's envelope with --json) and the
    documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            if kwargs.get("as_json"):
                body = exc.body if isinstance(exc, ApiError) and exc.body else {
                    "error": {"code": type(exc).__name__, "message": str(exc), "details": []}}
                if isinstance(exc, api_client.JobFailed):
                    body = {"error": {"code": "job_failed", "message": str(exc),
                                      "details": []}, "job": exc.job}
                typer.echo(json.dumps(body, ensure_ascii=False, default=str), err=True)
            else:
                typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _ids(raw: str | None) -> list[int] | None:
    return [int(x) for x in raw.replace(" ", "").split(",") if x] if raw else None


def _options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (numbers, true, lists), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


# -- login ----------------------------------------------------------------------------------------

@command
def login(url: str = typer.Argument(..., help="the server, e.g. http://127.0.0.1:8000"),
          token: str | None = typer.Option(None, help="an API token (annotune token create)"),
          email: str | None = typer.Option(None, help="sign in with email and password instead"),
          password: str | None = typer.Option(None, help="asked for, hidden, when not given"),
          project: int | None = typer.Option(None, help="default project for later commands"),
          as_json: bool = JSON) -> None:
    """Check a token (or sign in and create one) and store it with the server in the config
    file (readable by you only)."""
    if token is None:
        if email is None:
            raise typer.BadParameter("give --token, or --email to sign in")
        password = password or typer.prompt("password", hide_input=True)
        token = api_client.password_login(url, email, password)
    with Client(url, token) as api:
        me = api.me()
    path = api_client.save_config({"url": url.rstrip("/"), "token": token, "project": project})
    value = {"url": url.rstrip("/"), "email": me["email"], "config": str(path),
             "project": project}
    if as_json:
        typer.echo(json.dumps(value))
    else:
        typer.echo(f"logged in to {url} as {me['email']}; token stored in {path}")


# -- projects, documents ------------------------------------------------------------------------

@projects_app.command("create")
@command
def projects_create(name: str, description: str = "", url: str | None = URL,
                    token: str | None = TOKEN, as_json: bool = JSON) -> None:
    """Create a project (you own it)."""
    ctx = Ctx(url, token, None, as_json)
    project = ctx.api.create_project(name, description)
    ctx.out(project, f"project {project['id']}: {project['name']}")


@docs_app.command("upload")
@command
def docs_upload(files: list[Path] = FILES,
                wait: bool = WAIT, timeout: float = TIMEOUT, url: str | None = URL,
                token: str | None = TOKEN, project: int | None = PROJECT,
                as_json: bool = JSON) -> None:
    """Upload documents; wait until they are parsed and chunked."""
    ctx = Ctx(url, token, project, as_json)
    results = ctx.api.upload_documents(ctx.project, files)
    refused = [r for r in results if r["status_code"] >= 400]
    ids = [r["document_id"] for r in results if r.get("document_id")]
    docs = ctx.api.wait_documents(ctx.project, ids, timeout=timeout) if wait and ids else []
    ctx.out({"results": results, "documents": docs},
            lambda: "\n".join(f"{r.get('document_id') or '-':>6}  {r['filename']}  "
                              f"{r.get('error') or ('duplicate' if r.get('duplicate') else 'ok')}"
                              for r in results))
    if refused:
        raise typer.Exit(1)


# -- generation, samples ------------------------------------------------------------------------

@command
def generate(template: str = typer.Option(..., help="template id or name (newest version)"),
             provider: str = typer.Option("local", help="provider id, or 'local' (in-worker "
                                                        "SmolLM2)"),
             documents: str | None = typer.Option(None, help="document ids, comma-separated"),
             max_tokens: int | None = typer.Option(None, help="sampling.max_tokens"),
             param: list[str] = PARAMS,
             wait: bool = WAIT, timeout: float = TIMEOUT, url: str | None = URL,
             token: str | None = TOKEN, project: int | None = PROJECT,
             as_json: bool = JSON) -> None:
    """Start a generation job (drafts samples from chunks) and follow it."""
    ctx = Ctx(url, token, project, as_json)
    templates = ctx.api.list_templates(ctx.project)
    found = [t for t in templates if str(t["id"]) == template or t["name"] == template]
    if not found:
        raise typer.BadParameter(f"no template {template!r}")
    tpl = max(found, key=lambda t: (t["project_id"] is not None, t["version"]))
    prov = (ctx.api.local_provider(ctx.project) if provider == "local"
            else {"id": int(provider)})
    params = _options(param)
    if max_tokens is not None:
        params.setdefault("sampling", {})["max_tokens"] = max_tokens
    job = ctx.api.generate(ctx.project, template_id=tpl["id"], provider_id=prov["id"],
                           document_ids=_ids(documents), params=params)
    if wait:
        job = ctx.api.wait_generation(ctx.project, job["id"], timeout=timeout)
    ctx.out(job, f"generation job {job['id']}: {job['status']}, {job['done_units']}/"
                 f"{job['total_units']} units, {job['failed_units']} failed")


@samples_app.command("import")
@command
def samples_import(file: Path = FILE,
                   mapping: str | None = typer.Option(None, help="field mapping as JSON"),
                   fmt: str | None = typer.Option(None, "--format", help="alpaca|sharegpt|openai"),
                   mode: str = "strict", wait: bool = WAIT, timeout: float = TIMEOUT,
                   url: str | None = URL, token: str | None = TOKEN,
                   project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Import samples from a JSONL/JSON/CSV/Parquet file."""
    ctx = Ctx(url, token, project, as_json)
    job = ctx.api.import_samples(ctx.project, file.name, file.read_bytes(),
                                 mapping=json.loads(mapping) if mapping else None, fmt=fmt,
                                 mode=mode)
    if wait:
        job = ctx.api.wait_import(ctx.project, job["id"], timeout=timeout)
    ctx.out(job, f"import {job['id']}: {job['status']}, {job['imported']} imported, "
                 f"{job['skipped']} skipped")


@samples_app.command("bulk")
@command
def samples_bulk(set_status: str | None = typer.Option(None, help="accepted|rejected|..."),
                 add_tag: list[str] = ADD_TAGS,
                 status: list[str] = FILTER_STATUS,
                 tag: str | None = typer.Option(None, help="filter: tag"),
                 generation_job: int | None = None, import_job: int | None = None,
                 url: str | None = URL, token: str | None = TOKEN,
                 project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Change every sample a filter matches (e.g. accept the pending ones of an import)."""
    ctx = Ctx(url, token, project, as_json)
    flt = {"status": status, "tag": tag, "generation_job_id": generation_job,
           "import_job_id": import_job}
    result = ctx.api.bulk(ctx.project, {k: v for k, v in flt.items() if v},
                          status=set_status, add_tags=add_tag)
    ctx.out(result, lambda: json.dumps(result))


# -- datasets -------------------------------------------------------------------------------------

@dataset_app.command("freeze")
@command
def dataset_freeze(dataset: str = typer.Option(..., help="dataset id or name (created if new)"),
                   train: float = 0.8, validation: float = 0.1, test: float = 0.1,
                   seed: int = 0, stratify: str | None = typer.Option(None, help="document"),
                   tag: list[str] = VERSION_TAGS,
                   status: list[str] = VERSION_STATUS,
                   timeout: float = TIMEOUT, url: str | None = URL, token: str | None = TOKEN,
                   project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Freeze a dataset version (the filter's samples, split by the ratios and seed)."""
    ctx = Ctx(url, token, project, as_json)
    known = list(ctx.api.pages(f"/projects/{ctx.project}/datasets"))
    ds = next((d for d in known if str(d["id"]) == dataset or d["name"] == dataset), None)
    ds = ds or ctx.api.create_dataset(ctx.project, dataset)
    flt: dict[str, Any] = {"status": status}
    if tag:
        flt["tags"] = tag
    version = ctx.api.freeze(ctx.project, ds["id"], seed=seed, stratify_by=stratify, filter=flt,
                             split={"train": train, "validation": validation, "test": test})
    version = ctx.api.wait_version(ctx.project, ds["id"], version["id"], timeout=timeout)
    ctx.out(version, f"dataset {ds['id']} version {version['id']} (v{version['number']}): "
                     f"{version['counts']}")


@dataset_app.command("export")
@command
def dataset_export(version: int = typer.Option(..., help="version id"),
                   dataset: int = typer.Option(..., help="dataset id"),
                   fmt: str = typer.Option("sharegpt", "--format",
                                           help="alpaca|sharegpt|openai|hf"),
                   out: Path | None = OUT,
                   timeout: float = TIMEOUT, url: str | None = URL, token: str | None = TOKEN,
                   project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Export a version (and download the zip with --out)."""
    ctx = Ctx(url, token, project, as_json)
    ctx.api.export(ctx.project, dataset, version, fmt)
    export = ctx.api.wait_export(ctx.project, dataset, version, fmt, timeout=timeout)
    if out is not None:
        ctx.api.download_export(ctx.project, dataset, version, fmt, out)
        export["downloaded_to"] = str(out)
    ctx.out(export, f"{fmt} export of version {version}: {export['status']}, sha256 "
                    f"{export['manifest_sha256']}" + (f", saved to {out}" if out else ""))


# -- training, round two, evaluation ----------------------------------------------------------

@command
def train(version: int = typer.Option(..., help="dataset version id"),
          base_model: str = "smollm2-135m-instruct", method: str = "lora",
          hp: list[str] = HYPERPARAMETERS,
          validation: bool = typer.Option(True, "--validation/--no-validation",
                                          help="evaluate on the validation split while training"),
          evaluate_after: bool = False, merge_after: bool = False, wait: bool = WAIT,
          timeout: float = TIMEOUT, url: str | None = URL, token: str | None = TOKEN,
          project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Train a LoRA/QLoRA adapter on a dataset version and follow it step by step."""
    ctx = Ctx(url, token, project, as_json)
    job = ctx.api.train(ctx.project, dataset_version_id=version, base_model=base_model,
                        method=method, hyperparameters=_options(hp), use_validation=validation,
                        evaluate_after=evaluate_after, merge_after=merge_after)
    if wait:
        job = ctx.api.wait_training(ctx.project, job["id"], timeout=timeout)
    ctx.out(job, f"training job {job['id']}: {job['status']} at step {job['step']}/"
                 f"{job['total_steps']}")


@provider_app.command("register")
@command
def provider_register(job: int = typer.Argument(..., help="a succeeded training job"),
                      url: str | None = URL, token: str | None = TOKEN,
                      project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Make a training job's fine-tuned model a provider of the project (round two)."""
    ctx = Ctx(url, token, project, as_json)
    prov = ctx.api.register_provider(ctx.project, job)
    ctx.out(prov, f"provider {prov['id']}: {prov['name']} ({prov['model']})")


@command
def eval(version: int = typer.Option(..., help="dataset version id"),
         base_model: str | None = typer.Option(None, help="evaluate a base model"),
         training_job: int | None = typer.Option(None, help="... or a job's adapter"),
         provider: int | None = typer.Option(None, help="... or a provider"),
         split: str = "test", name: str = "",
         metrics: str = typer.Option("keywords,rouge", help="comma-separated"),
         metric_options: str | None = typer.Option(None, help="JSON per metric"),
         max_tokens: int = 128, batch_size: int = 8, wait: bool = WAIT,
         timeout: float = TIMEOUT, url: str | None = URL, token: str | None = TOKEN,
         project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Evaluate one model on a split of a version."""
    ctx = Ctx(url, token, project, as_json)
    kinds = [k for k, v in (("base", base_model), ("adapter", training_job),
                            ("endpoint", provider)) if v is not None]
    if len(kinds) != 1:
        raise typer.BadParameter("give one of --base-model, --training-job, --provider")
    run = ctx.api.evaluate(ctx.project, dataset_version_id=version, model_kind=kinds[0],
                           split=split, name=name, base_model=base_model,
                           training_job_id=training_job, provider_id=provider,
                           generation={"max_tokens": max_tokens, "batch_size": batch_size},
                           metrics=[m for m in metrics.split(",") if m],
                           metric_options=json.loads(metric_options) if metric_options else None)
    if wait:
        run = ctx.api.wait_eval(ctx.project, run["id"], timeout=timeout)
    ctx.out(run, lambda: f"evaluation run {run['id']} ({run['name']}): {run['status']}, "
                         + ", ".join(f"{k} {v:.4g}" for k, v in sorted(run["aggregate"].items())
                                     if isinstance(v, (int, float))))


@command
def compare(runs: list[int] = RUNS,
            require_better: str | None = typer.Option(
                None, help="exit 5 unless every candidate beats the baseline on this metric "
                           "(the interval excludes 0)"),
            n_resamples: int = 2000, seed: int = 0, url: str | None = URL,
            token: str | None = TOKEN, project: int | None = PROJECT,
            as_json: bool = JSON) -> None:
    """Compare evaluation runs: deltas with paired bootstrap 95% intervals, win/tie/loss."""
    ctx = Ctx(url, token, project, as_json)
    cmp = ctx.api.compare(ctx.project, runs, n_resamples=n_resamples, seed=seed)
    ctx.out(cmp, lambda: api_client.format_comparison(cmp))
    if require_better:
        higher = cmp.get("higher_is_better", {}).get(require_better, True) is not False
        for comp in cmp["comparisons"]:
            m = comp["metrics"].get(require_better)
            if m is None or not (m["ci_low"] > 0 if higher else m["ci_high"] < 0):
                raise typer.Exit(NOT_BETTER)


# -- serve ---------------------------------------------------------------------------------------

def vllm_available() -> bool:
    return shutil.which("vllm") is not None


def serve_argv(job: dict[str, Any], *, host: str, port: int, merged: bool) -> list[str]:
    """The job's ``vllm serve`` command (written by training: the base with the adapter
    attached, or the merged folder), listening on ``host:port``."""
    art = job.get("artifacts") or {}
    if merged and not art.get("merged_dir"):
        raise typer.BadParameter("the job has no merged model (train with --merge-after)")
    command = (art.get("serve_commands") or {}).get("merged" if merged else "lora")
    if not command:
        raise ClientError(f"training job {job['id']} has no vLLM command in its artifacts")
    return [*shlex.split(command), "--host", host, "--port", str(port)]


@command
def serve(job: int = typer.Argument(..., help="a succeeded training job"),
          host: str = "127.0.0.1", port: int = 8001,
          merged: bool = typer.Option(False, help="serve the merged model, not base + adapter"),
          public_url: str | None = typer.Option(None, help=(
              "the URL the API and its workers reach the server at (default "
              "http://HOST:PORT/v1; the API's egress policy must allow it)")),
          startup_timeout: float = 900.0, url: str | None = URL, token: str | None = TOKEN,
          project: int | None = PROJECT, as_json: bool = JSON) -> None:
    """Serve a job's model with vLLM on this (GPU) machine: start ``vllm serve``, wait until it
    answers, register it as an OpenAI-compatible provider of the project; Ctrl-C (or SIGTERM)
    stops the server and unregisters the provider. Refused (exit 6) where vLLM is not
    installed: nothing is started, the command is printed."""
    ctx = Ctx(url, token, project, as_json)
    info = ctx.api.get(f"/projects/{ctx.project}/training-jobs/{job}")
    if info["status"] != "succeeded":
        raise ClientError(f"training job {job} is {info['status']}; only a succeeded job serves")
    argv = serve_argv(info, host=host, port=port, merged=merged)
    if not vllm_available():
        ctx.out({"error": {"code": "vllm_not_installed", "message": "vLLM is not installed on "
                           "this machine", "details": []}, "command": argv},
                "vLLM is not installed on this machine (no `vllm` on PATH); nothing was started.\n"
                "On a GPU worker with vLLM (and the data folder), this command runs:\n  "
                + " ".join(argv) + "\nOr use the fine-tuned model in the worker without vLLM: "
                f"annotune provider register {job} -p {ctx.project}")
        raise typer.Exit(NO_VLLM)
    name = (info.get("artifacts") or {}).get("name") or f"annotune-{job}"
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base_url = public_url or f"http://{local if host == local else socket.getfqdn()}:{port}/v1"
    signal.signal(signal.SIGTERM, _interrupt)
    proc = subprocess.Popen(argv, start_new_session=True)
    provider = None
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(f"http://{local}:{port}/v1"):
            if proc.poll() is not None:
                raise ClientError(f"vllm serve exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise api_client.WaitTimeout(f"vllm did not answer within {startup_timeout} s")
            time.sleep(2)
        provider = ctx.api.create_provider(ctx.project, name=f"{name} (vLLM on {host}:{port})",
                                           kind="openai", base_url=base_url, model=name,
                                           max_concurrency=16)
        ctx.out({"provider": provider, "command": argv, "pid": proc.pid},
                f"serving {name} at {base_url}; provider {provider['id']} registered "
                "(Ctrl-C stops it)")
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if provider is not None:
            try:
                ctx.api.request("DELETE", f"/projects/{ctx.project}/providers/{provider['id']}")
            except ApiError as exc:  # generation jobs used it: it stays, say so
                typer.echo(f"provider {provider['id']} kept: {exc}", err=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C: the provider is removed


def _healthy(base_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base_url}/models", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def register(app: typer.Typer) -> None:
    """Mount the REST commands on the ``annotune`` app."""
    for fn in (login, generate, train, eval, compare, serve):
        app.command(fn.__name__)(fn)
    app.add_typer(projects_app, name="projects")
    app.add_typer(docs_app, name="docs")
    app.add_typer(samples_app, name="samples")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(provider_app, name="provider")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `annotune`")
