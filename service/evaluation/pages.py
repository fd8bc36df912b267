from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import or_, select

from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.errors import AppError
from service.core.templating import render
from service.evaluation import metrics as metrics_mod
from service.evaluation import service as evaluation_service
from service.models import DatasetVersion, EvalRun, LLMProvider, Role, TrainingJob
from service.projects.pages import add_tab

router = APIRouter(include_in_schema=False)
add_tab("/evaluation", "Evaluation", order=100)

# ASCII words (with the spaces after them) stay whole; anything else (CJK, punctuation) is one
# token each, so Chinese text is diffed by character
_TOKEN = re.compile(r"[A-Za-z0-9_]+\s*|\s+|.\s*", re.DOTALL)
_DIFF_LIMIT = 4000


def fmt(value: Any) -> str:
    """Numbers as the compare page prints them (and as the tests look for them)."""
    if value is None:
        return "–"
    return f"{float(value):.4f}"


def fmt_delta(value: Any) -> str:
    if value is None:
        return "–"
    return f"{float(value):+.4f}"


def diff_segments(a: str | None, b: str | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Word/char diff of ``a`` (baseline) and ``b``: ``(segments of a, segments of b)`` where a
    segment is ``("eq"|"del"|"ins", text)``. Rendered by the template, so autoescaped."""
    ta = _TOKEN.findall((a or "")[:_DIFF_LIMIT])
    tb = _TOKEN.findall((b or "")[:_DIFF_LIMIT])
    left: list[tuple[str, str]] = []
    right: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if tag == "equal":
            left.append(("eq", "".join(ta[i1:i2])))
            right.append(("eq", "".join(tb[j1:j2])))
            continue
        if i2 > i1:
            left.append(("del", "".join(ta[i1:i2])))
        if j2 > j1:
            right.append(("ins", "".join(tb[j1:j2])))
    left, right = _merged(left), _merged(right)
    if a and len(a) > _DIFF_LIMIT:
        left.append(("eq", a[_DIFF_LIMIT:]))
    if b and len(b) > _DIFF_LIMIT:
        right.append(("eq", b[_DIFF_LIMIT:]))
    return left, right


def _merged(segments: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for tag, text in segments:
        if out and out[-1][0] == tag:
            out[-1] = (tag, out[-1][1] + text)
        else:
            out.append((tag, text))
    return out


def _scale(metric: str, values: list[float]) -> float:
    try:
        scale = metrics_mod.get_metric(metric).scale
    except metrics_mod.MetricError:
        scale = None
    top = max([abs(v) for v in values] + [1e-9])
    return float(scale) if scale else top * 1.1


def bar_charts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Geometry of one horizontal bar chart per metric: a bar per run's mean, and on each
    candidate the CI of its paired delta drawn around ``baseline mean + delta``."""
    width, label_w, row_h = 420.0, 150.0, 24
    by_id = {c["id"]: c for c in report["comparisons"]}
    charts = []
    for metric in report["metrics"]:
        means = [r["means"].get(metric) for r in report["runs"]]
        values = [m for m in means if m is not None]
        for c in report["comparisons"]:
            e = c["metrics"].get(metric)
            if e:
                values += [e["baseline_mean"] + e["ci_low"], e["baseline_mean"] + e["ci_high"]]
        if not values:
            continue
        scale = _scale(metric, values)

        def x(v: float, scale: float = scale) -> float:
            return label_w + max(0.0, min(1.0, v / scale)) * width

        rows = []
        for i, run in enumerate(report["runs"]):
            mean = run["means"].get(metric)
            row: dict[str, Any] = {"label": f"#{run['id']} {run.get('name', '')}"[:24],
                                   "y": 6 + i * row_h, "value": fmt(mean),
                                   "width": 0.0 if mean is None else round(x(mean) - label_w, 2),
                                   "baseline": run["id"] == report["baseline"]}
            entry = by_id.get(run["id"], {}).get("metrics", {}).get(metric)
            if entry:
                row["ci"] = (round(x(entry["baseline_mean"] + entry["ci_low"]), 2),
                             round(x(entry["baseline_mean"] + entry["ci_high"]), 2))
            row["text_x"] = round(max(label_w + row["width"], row["ci"][1] if "ci" in row else 0) + 6, 2)
            rows.append(row)
        charts.append({"metric": metric, "rows": rows, "label_w": label_w,
                       "width": label_w + width + 70, "height": 12 + len(rows) * row_h})
    return charts


@router.get("/projects/{project_id}/evaluation", response_class=HTMLResponse)
def evaluation_page(request: Request, access: ProjectViewer, db: SessionDep):
    pid = access.project.id
    runs = list(db.scalars(select(EvalRun).where(EvalRun.project_id == pid)
                           .order_by(EvalRun.id.desc()).limit(200)))
    pairs: dict[int, dict[str, int]] = {}
    for run in runs:
        if run.training_job_id is None:
            continue
        base_name, adapter_name = evaluation_service.after_training_names(run.training_job_id)
        if run.name in (base_name, adapter_name):
            pairs.setdefault(run.training_job_id, {})[
                "base" if run.name == base_name else "adapter"] = run.id
    after_training = [(job_id, evaluation_service.compare_url(pid, [p["base"], p["adapter"]]))
                      for job_id, p in sorted(pairs.items(), reverse=True)
                      if "base" in p and "adapter" in p]
    versions = list(db.scalars(select(DatasetVersion).where(
        DatasetVersion.project_id == pid, DatasetVersion.status == "ready")
        .order_by(DatasetVersion.id.desc())))
    training_jobs = list(db.scalars(select(TrainingJob).where(
        TrainingJob.project_id == pid, TrainingJob.status == "succeeded").order_by(TrainingJob.id.desc())))
    providers = list(db.scalars(select(LLMProvider).where(
        or_(LLMProvider.project_id == pid, LLMProvider.project_id.is_(None)),
        LLMProvider.kind == "openai").order_by(LLMProvider.id)))
    metric_list = [m for m in metrics_mod.list_metrics() if m.kind == "reference" and not m.is_async]
    return render(request, "pages/evaluation.html", runs=runs, versions=versions,
                  training_jobs=training_jobs, providers=providers, metric_list=metric_list,
                  default_metrics=evaluation_service.DEFAULT_METRICS, after_training=after_training,
                  label=evaluation_service.model_label, can_edit=access.at_least(Role.lead))


def _run_page(request: Request, access, db, run_id: int, *, error: str | None = None,
              status_code: int = 200) -> HTMLResponse:
    run = evaluation_service.get_run(db, project_id=access.project.id, run_id=run_id)
    names = evaluation_service.ordered_metrics([run], set(run.aggregate or {}))
    return render(request, "pages/evaluation_run.html", status_code=status_code, run=run,
                  aggregate=[(name, run.aggregate[name]) for name in names],
                  label=evaluation_service.model_label(run),
                  summary=evaluation_service.run_summary(db, run), fmt=fmt,
                  can_edit=access.at_least(Role.lead), page_error=error)


@router.get("/projects/{project_id}/evaluation/runs/{run_id}", response_class=HTMLResponse)
def evaluation_run_page(request: Request, run_id: int, access: ProjectViewer, db: SessionDep):
    return _run_page(request, access, db, run_id)


@router.post("/projects/{project_id}/evaluation/runs/{run_id}/cancel", response_class=HTMLResponse)
def cancel_run_form(request: Request, run_id: int, access: ProjectLead, db: SessionDep):
    """The run page's Cancel button (a form with the CSRF token); back to the run page."""
    run = evaluation_service.get_run(db, project_id=access.project.id, run_id=run_id)
    try:
        with db.begin_nested():
            evaluation_service.cancel_run(db, run)
    except AppError as exc:
        return _run_page(request, access, db, run_id, error=exc.message,
                         status_code=exc.status_code)
    return RedirectResponse(f"/projects/{access.project.id}/evaluation/runs/{run_id}",
                            status_code=303)


@router.get("/projects/{project_id}/evaluation/compare", response_class=HTMLResponse)
def evaluation_compare_page(request: Request, access: ProjectViewer, db: SessionDep,
                            runs: str = "", baseline: int | None = None,
                            sort_metric: str | None = None, seed: int = 0,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    pid = access.project.id
    ids = evaluation_service.parse_run_ids(runs)
    report = evaluation_service.compare(db, project_id=pid, run_ids=ids, baseline_id=baseline,
                                        sort_metric=sort_metric, seed=seed)
    base_id = report["baseline"]
    candidates = [r for r in report["runs"] if r["id"] != base_id]
    samples = []
    for row in report["per_sample"][:limit]:
        base_pred = row.get("predictions", {}).get(base_id)
        cands = []
        for cand in candidates:
            pred = row.get("predictions", {}).get(cand["id"])
            left, right = diff_segments(base_pred, pred)
            cands.append({"id": cand["id"], "segments": right, "base_segments": left,
                          "score": row["scores"].get(cand["id"]),
                          "missing": pred is None})
        samples.append({"row": row, "candidates": cands,
                        "base_segments": cands[0]["base_segments"] if cands else [("eq", base_pred or "")]})
    return render(request, "pages/evaluation_compare.html", report=report, candidates=candidates,
                  baseline_run=next(r for r in report["runs"] if r["id"] == base_id),
                  samples=samples, charts=bar_charts(report), fmt=fmt, fmt_delta=fmt_delta,
                  runs_param=",".join(str(i) for i in ids), limit=limit)
