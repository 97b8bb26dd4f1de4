"""A study that grows: a spec that only adds values to the axes of a grid (a PLM, a loss, a λ, seeds), or
raises an Optuna search's ``num_samples``, continues the study under its parent run and runs only the new
trials. Any other change (a value removed, a fixed key such as epochs or data changed, a loss redefined)
would make the old and new trials incomparable: it is refused, naming the keys. Pure functions of the
two specs.
"""

from __future__ import annotations

from nerlab.platform.specs.search import grid_size
from nerlab.platform.specs.study import StudySpec
from nerlab.platform.studies.ownership import changes, identity
from nerlab.platform.tracking.runs import flatten, spec_params

# A grid field's name in messages: (one, many)
_LABELS = {"plm": ("PLM", "PLMs"), "loss": ("loss", "losses"), "variance_penalty": ("λ", "λ values"),
           "seeds": ("seed", "seeds")}


def _grid_fields(spec: StudySpec) -> list[str]:
    """The search fields a grid is the product of (``seeds``, not Tune's ``seed``)."""
    s = spec.search
    return ["plm", "loss", "variance_penalty", "seeds"] + [k for k in s.axes if getattr(s, k) is not None]


def _values(spec: StudySpec, field: str) -> list:
    if field == "loss":
        return list(spec.search.losses)
    return list(getattr(spec.search, field) or ())


def _without(params: dict[str, str], fields: set[str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if not any(k == f or k.startswith(f + ".") for f in fields)}


def compare(old: StudySpec, new: StudySpec) -> tuple[dict[str, list], list[str]]:
    """What ``new`` adds to ``old``'s search, and what keeps it from growing ``old``.

    Returns (added, blocked): a grid field (``plm``, ``seeds``, ...) -> the values it gains, or for an
    Optuna search ``num_samples`` -> [old, new]; and one text per key that is not growth (a fixed key
    changed, a value removed, a loss redefined, an axis added). Both empty: the same study."""
    so, sn = old.search, new.search
    added: dict[str, list] = {}
    blocked: list[str] = []
    searched: set[str] = set()
    if so.mode == sn.mode == "grid":
        for field in dict.fromkeys(_grid_fields(old) + _grid_fields(new)):
            a, b = _values(old, field), _values(new, field)
            searched.add(f"search.{field}")
            gone = [v for v in a if v not in b]
            if not a:
                blocked.append(f"search.{field} (a new axis: the trials run so far have no value on it)")
            elif gone:
                blocked.append(f"search.{field} (removed: {', '.join(map(str, gone))})")
            elif len(b) > len(a):
                added[field] = [v for v in b if v not in a]
        for name in so.losses.keys() & sn.losses.keys():
            if so.losses[name] != sn.losses[name]:
                blocked.append(f"search.loss.{name} (its weights changed: {so.losses[name]} -> {sn.losses[name]})")
    elif so.mode == sn.mode == "optuna":
        searched.add("search.num_samples")
        if sn.num_samples < so.num_samples:
            blocked.append(f"search.num_samples {so.num_samples} -> {sn.num_samples} (a search cannot shrink)")
        elif sn.num_samples > so.num_samples:
            added["num_samples"] = [so.num_samples, sn.num_samples]
    fixed = changes(*(_without(identity(flatten(spec_params(s))), searched) for s in (old, new)), most=8)
    return added, ([fixed] if fixed else []) + blocked


def describe(old: StudySpec, new: StudySpec, added: dict[str, list]) -> str:
    """'adds 6 trials: PLM qarib × 2 losses × 3 seeds' (one grown axis), 'adds 10 trials: PLM + qarib, seeds
    + 4, 5' (several), 'adds 8 trials to the search (num_samples 8 -> 16)' (Optuna)."""
    if "num_samples" in added:
        was, now = added["num_samples"]
        return f"adds {now - was} trials to the search (num_samples {was} -> {now})"
    n = grid_size(new) - grid_size(old)

    def label(field: str, count: int) -> str:
        one, many = _LABELS.get(field, (field, f"{field} values"))
        return one if count == 1 else many

    if len(added) == 1:
        (field, values), = added.items()
        parts = [f"{label(field, len(values))} {', '.join(map(str, values))}"]
        parts += [f"{len(_values(new, f))} {label(f, 2)}" for f in _grid_fields(new)
                  if f != field and len(_values(new, f)) > 1]
        return f"adds {n} trials: {' × '.join(parts)}"
    return f"adds {n} trials: " + ", ".join(f"{label(f, len(v))} + {', '.join(map(str, v))}" for f, v in added.items())
