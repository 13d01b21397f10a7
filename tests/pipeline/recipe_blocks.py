"""Where a recipe-level block (sampling, engine) ended up: every stage's and self_improve round's copy."""


def blocks_of(recipe, field: str) -> dict:
    """`field` of every stage that has it, and of self_improve's rounds, by dotted place."""
    out = {}
    for s in recipe.stages:
        if hasattr(s.options, field):
            out[s.name] = getattr(s.options, field)
        for part in ("generate", "eval", "grpo"):
            if hasattr(s.options, part):
                out[f"{s.name}.{part}"] = getattr(getattr(s.options, part), field)
    return out
