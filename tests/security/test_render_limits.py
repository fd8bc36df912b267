"""Item 7: template rendering with limits (output size, loop iterations and calls, time), in the
API's preview and in the function the worker renders with; tokenizer names from a list."""
from __future__ import annotations

import gc
import time

import pytest

from service.generation import prompts

BOMBS = {
    "ljust": "{{ ''.ljust(300000000) }}",
    "loop_1e8": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "range_list": "{{ range(10**9)|list }}",
    "nested_list_loops": "{% set x = range(100000)|list %}{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}",
    "macro_fanout": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "concat_doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "plus_doubling": "{% macro d(s, n) %}{% if n %}{{ d(s + s, n-1) }}{% endif %}{% endmacro %}{{ d('x', 40) }}",
    "center": "{{ 'x'|center(300000000) }}",
    "percent_width": "{{ '%300000000d' % 1 }}",
    "format_width": "{{ '{:>300000000}'.format(1) }}",
    "replace": "{{ ('x'*1000000)|replace('x', 'yy'*500000) }}",
    "join": "{{ (['x'*1000000]*1000)|join }}",
    "block_set": "{% set s %}{% for i in range(100000) %}{{ 'x'*1000 }}{% endfor %}{% endset %}{{ s|length }}",
    "output": "{% for i in range(100000) %}{{ 'x'*1000 }}{% endfor %}",
    "zfill": "{{ 'x'.zfill(10**9) }}",
    "recursion": "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}",
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# Each bomb left alone runs for minutes or exhausts memory; refused by a limit it takes a few
# milliseconds (the renderer's own wall limit is MAX_SECONDS = 0.5 s). The bound below separates the
# two with room for a loaded CI machine: a run once took 1.08 s for a 4 ms refusal, a pause of the
# whole process (a collection of the test process's large heap), not of the renderer.
QUICK = 4 * prompts.MAX_SECONDS + 1.0


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_each_bomb_is_refused_quickly(name):
    gc.collect()
    start = time.perf_counter()
    with pytest.raises(prompts.PromptError, match="template (not allowed|error)"):
        prompts.render(BOMBS[name])
    assert time.perf_counter() - start < QUICK


def test_ordinary_templates_still_render():
    out = prompts.render("{% for q in range(n) %}Q{{ loop.index }}: {{ text ~ '!' }}\n{% endfor %}"
                         "{{ '%3d|%-2s' % (1, 'a') }} {{ '{:>4}'.format('x') }} "
                         "{{ 'a,b'|replace(',', ';') }} {{ [1, 2]|join(', ') }} {{ 'ab'|center(6) }}",
                         n=2, text="hi")
    assert out == "Q1: hi!\nQ2: hi!\n  1|a     x a;b 1, 2   ab  "
    for d in prompts.list_defaults():  # every shipped default renders within the limits
        variables = {v: "some text" for v in d.variables}
        variables.update(n=3, rounds=2)
        prompts.render(d.text, **variables)


def test_preview_of_each_bomb_is_a_422_quickly_and_rss_stays(client, db, factories):
    from service.models import User

    owner = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, owner.user_id))
    ids = {}
    for name, text in BOMBS.items():
        resp = client.post(f"/api/v1/projects/{project.id}/templates", headers=owner.headers,
                           json={"name": name, "kind": "custom", "text": text})
        assert resp.status_code == 201, resp.text
        ids[name] = resp.json()["id"]
    gc.collect()
    before = _rss_mb()
    for name, template_id in ids.items():
        start = time.perf_counter()
        resp = client.post(f"/api/v1/projects/{project.id}/templates/{template_id}/preview",
                           headers=owner.headers, json={})
        elapsed = time.perf_counter() - start
        assert resp.status_code == 422, (name, resp.status_code, resp.text[:200])
        assert elapsed < QUICK, (name, elapsed)
    gc.collect()
    assert _rss_mb() - before < 50


def test_the_worker_render_path_has_the_same_limits():
    from service.core.errors import Invalid
    from service.generation import service as generation_service
    from service.models import PromptTemplate

    template = PromptTemplate(name="t", kind="custom", text=BOMBS["loop_1e8"], version=1)
    with pytest.raises(Invalid):
        generation_service.render_template(template, {})


@pytest.mark.parametrize("name", ["hf:/etc", "hf:/nonexistent/tokenizer", "hf:../../models",
                                  "hf:" + "x" * 300])
def test_tokenizer_paths_are_refused_in_the_api(client, db, factories, name):
    from service.models import User

    owner = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, owner.user_id))
    resp = client.get(f"/api/v1/projects/{project.id}/sample-stats", params={"tokenizer": name},
                      headers=owner.headers)
    assert resp.status_code == 422
    assert "ANNOTUNE_HF_TOKENIZERS" in resp.json()["error"]["message"]
    bad = client.get(f"/api/v1/projects/{project.id}/sample-stats", params={"tokenizer": "bpe"},
                     headers=owner.headers)
    assert bad.status_code == 422
    ok = client.get(f"/api/v1/projects/{project.id}/sample-stats", params={"tokenizer": "simple"},
                    headers=owner.headers)
    assert ok.status_code == 200


def test_listed_hf_tokenizer_loads_by_name_without_transformers(tmp_path, monkeypatch):
    tokenizers = pytest.importorskip("tokenizers")
    from service.core.config import get_settings
    from service.samples.tokens import get_tokenizer

    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tokenizer.json"))
    monkeypatch.setattr(get_settings(), "hf_tokenizers", {"tiny": str(tmp_path)})
    tok = get_tokenizer("hf:tiny")
    assert tok.name == "hf:tiny" and tok.count("hello world again") == 3
