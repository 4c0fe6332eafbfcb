"""Small user files that override a benchmark's defaults: class order, class names, prompt templates.

- class order: a YAML/JSON list of class indices, a mapping holding one (`class_order: [...]`, the form
  RAPF and Continual-CLIP ship), or plain text of integers separated by spaces, commas or newlines.
- class names: lines `id name` (ids 0..n-1 or 1..n), lines `key name` where key is the data set's own
  class key (a wnid, a folder name), or one name per line in class-index order; also a JSON/YAML list
  or mapping. Names are used verbatim (stripped).
- templates: one per line, each with exactly one `{}`; blank lines and `#` comments are ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

_ORDER_KEYS = ("class_order", "order", "classes")


def _read_text(path: str | Path, what: str) -> tuple[Path, str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} file {p} does not exist (or is not a file)")
    try:
        return p, p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {what} file {p}: {err}") from err


def _structured(p: Path, text: str) -> Any:
    """Parse JSON/YAML when the file is meant to be structured; None for plain text."""
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p} is not valid JSON: {err}") from err
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{p} is not valid YAML: {err}") from err
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")) or re.match(r"^\w+\s*:", stripped):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    return None


def load_class_order(path: str | Path, n_classes: int) -> list[int]:
    """A class order from a file; must be a permutation of 0..n_classes-1 (else ConfigError)."""
    p, text = _read_text(path, "class order")
    data = _structured(p, text)
    if isinstance(data, dict):
        for key in _ORDER_KEYS:
            if key in data:
                data = data[key]
                break
        else:
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ConfigError(
                    f"class order file {p} is a mapping without a `class_order:` list "
                    f"(keys: {', '.join(map(str, data))}); write `class_order: [..]` or a plain list"
                )
            data = lists[0]
    if data is None or isinstance(data, str | int):
        uncommented = re.sub(r"#.*", "", text)
        data = [t for t in re.split(r"[\s,\[\]]+", uncommented) if t and t != "-"]
    if not isinstance(data, list):
        raise ConfigError(f"class order file {p} must hold a list of class indices")
    order: list[int] = []
    for tok in data:
        try:
            order.append(int(str(tok).strip()))
        except ValueError:
            raise ConfigError(
                f"class order file {p}: {tok!r} is not a class index (expected integers 0..{n_classes - 1})"
            ) from None
    if sorted(order) != list(range(n_classes)):
        seen = set(order)
        missing = [i for i in range(n_classes) if i not in seen]
        dups = sorted({i for i in order if order.count(i) > 1}) if len(seen) != len(order) else []
        outside = sorted(i for i in seen if not 0 <= i < n_classes)
        parts = [f"it has {len(order)} entries for {n_classes} classes"]
        if missing:
            parts.append(f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if dups:
            parts.append(f"repeated {dups[:10]}{' ...' if len(dups) > 10 else ''}")
        if outside:
            parts.append(f"out of range {outside[:10]}")
        raise ConfigError(f"class order file {p} must be a permutation of 0..{n_classes - 1}: " + "; ".join(parts))
    return order


def _lines(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def load_class_names(path: str | Path, n_classes: int, keys: list[str] | None = None) -> list[str]:
    """Class names in class-index order from a file (see the module docstring for the forms)."""
    p, text = _read_text(path, "class names")
    data = _structured(p, text) if p.suffix.lower() in (".json", ".yaml", ".yml") else None
    if isinstance(data, list):
        names = [str(x).strip() for x in data]
        if len(names) != n_classes:
            raise ConfigError(f"class names file {p} lists {len(names)} names for {n_classes} classes")
        return names
    if isinstance(data, dict):
        pairs = [(str(k), str(v).strip()) for k, v in data.items()]
        return _from_pairs(p, pairs, n_classes, keys)
    lines = _lines(text)
    split = [line.split(None, 1) for line in lines]
    if lines and all(len(s) == 2 for s in split):
        firsts = [s[0] for s in split]
        if all(re.fullmatch(r"\d+", f) for f in firsts):
            # Every line is `<integer> <name>`: the id form (ids are checked there).
            return _from_pairs(p, [(s[0], s[1].strip()) for s in split], n_classes, keys)
        if keys is not None and set(firsts) == set(keys) and len(firsts) == n_classes:
            return _from_pairs(p, [(s[0], s[1].strip()) for s in split], n_classes, keys)
    if keys is not None:
        # A file with other text besides `key name` lines (such as ImageNet-R's README.txt).
        keyset = set(keys)
        keyed = [s for s in split if len(s) == 2 and s[0] in keyset]
        if len({s[0] for s in keyed}) == n_classes:
            return _from_pairs(p, [(s[0], s[1].strip()) for s in keyed], n_classes, keys)
    if len(lines) != n_classes:
        raise ConfigError(
            f"class names file {p} has {len(lines)} non-empty lines for {n_classes} classes; write one "
            f"name per line in class-index order, or lines `id name` with ids 0..{n_classes - 1} "
            f"(or 1..{n_classes})" + (", or lines `key name` with the data set's class keys" if keys else "")
        )
    return lines


def _from_pairs(p: Path, pairs: list[tuple[str, str]], n: int, keys: list[str] | None) -> list[str]:
    by_key = dict(pairs)
    if len(by_key) != len(pairs):
        raise ConfigError(f"class names file {p} names some class twice")
    if keys is not None and set(keys) == set(by_key):
        # the data set's own keys first: class folders that are bare ids (`0/`, `10/`, ...) sort as strings, so
        # `10 name` means the folder `10`, not the class at index 10
        return [by_key[k] for k in keys]
    try:
        ids: dict[int, str] | None = {int(k): v for k, v in by_key.items()}
    except ValueError:
        ids = None
    if ids is not None and sorted(ids) == list(range(n)):
        return [ids[i] for i in range(n)]
    if ids is not None and sorted(ids) == list(range(1, n + 1)):
        return [ids[i + 1] for i in range(n)]
    if keys is not None and set(keys) <= set(by_key):
        return [by_key[k] for k in keys]
    raise ConfigError(
        f"class names file {p}: the ids must cover 0..{n - 1} (or 1..{n}) exactly"
        + (f", or the keys must be the data set's class keys (such as {keys[0]!r})" if keys else "")
        + f"; got {len(by_key)} entries"
    )


def load_templates(path: str | Path) -> list[str]:
    """Prompt templates, one per line, each with exactly one `{}` for the class name."""
    p, text = _read_text(path, "templates")
    data = _structured(p, text) if p.suffix.lower() in (".json", ".yaml", ".yml") else None
    items = [str(x) for x in data] if isinstance(data, list) else _lines(text)
    return check_templates(items, f"templates file {p}")


def check_templates(items, where: str) -> list[str]:
    """`items` if it is a non-empty list of prompt templates, each a format string with exactly one `{}`;
    else a one-line ConfigError naming `where` they come from."""
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where} holds no templates (a list of strings, each with `{{}}`)")
    for i, t in enumerate(items, 1):
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ConfigError(
                f"{where}, template {i} {t!r}: each template needs exactly one `{{}}` where the "
                "class name goes, e.g. `a photo of a {}.`"
            )
        try:
            t.format("x")
        except (IndexError, KeyError, ValueError) as err:
            raise ConfigError(
                f"{where}, template {i} {t!r} is not a valid format string ({err}); "
                "write literal braces as {{ and }}"
            ) from None
    return items
