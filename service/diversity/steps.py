"""The steps of the diversity jobs and the template kind each renders
(``templates/prompts/<kind>.<lang>.j2``). Imports nothing, so the generation domain can keep
these templates out of its own jobs."""

STEP_KINDS: dict[str, tuple[str, ...]] = {
    "tree": ("domain_tree",),
    "tag": ("domain_tag",),
    "ga": ("ga_pairs",),
    "distill": ("topic_expand", "topic_questions", "topic_answer"),
}
TEMPLATE_KINDS = frozenset(k for kinds in STEP_KINDS.values() for k in kinds)
# what each step's template is rendered with (``workers/diversity/runner.py``)
STEP_VARIABLES: dict[str, frozenset[str]] = {
    "domain_tree": frozenset({"outline", "excerpts", "levels"}),
    "domain_tag": frozenset({"leaves", "question", "answer"}),
    "ga_pairs": frozenset({"title", "text", "n"}),
    "topic_expand": frozenset({"topic", "path", "n"}),
    "topic_questions": frozenset({"topic", "path", "n"}),
    "topic_answer": frozenset({"question", "path"}),
}
