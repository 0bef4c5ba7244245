"""LightGBM's model text, checked in Python before LightGBM sees it.

LightGBM's own parser trusts its input: a truncated file, a ``tree_sizes`` line that does
not match, a child index or a split feature out of range end in ``std::terminate``
(SIGABRT) or in reads outside the model's arrays, not in an exception. A checksum recorded
at training proves the file is unchanged, not that it is sound (a file re-sealed after an
edit passes it), and a first-release model has no checksum at all. So every model goes
through :func:`checked_model_text` first.

Why a parser, not a trial load in a subprocess: a trial load catches a crash while
loading, but a bad child index or split feature loads fine and only misbehaves when a
prediction walks that node (an endless loop for a cycle, a read out of bounds for an
index), and no trial input reaches every node. The parser checks the invariants that
make loading and every traversal safe, for every tree:

- the header names one binary model over exactly the schema's feature columns;
- each tree's arrays have the lengths its ``num_leaves`` implies, numbers are finite;
- ``split_feature`` is a column index, ``decision_type`` a known kind, a categorical
  split's threshold indexes ``cat_boundaries``, which index ``cat_threshold``;
- ``left_child``/``right_child`` make a tree: from the root every internal node and
  every leaf is reached exactly once (no cycle, nothing out of range).

LightGBM then parses text rebuilt from what was checked: known keys only, in
LightGBM's own layout, without ``tree_sizes`` (so it reads the trees in order instead
of trusting byte offsets) and without the trailing parameters section, which
prediction does not use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ...core.errors import UsageError

MAX_LEAVES = 131072  # LightGBM's own upper bound for num_leaves
_INT = re.compile(r"-?\d{1,12}\Z")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,4})?\Z")
_RANGE = re.compile(r"\[(?P<lo>[^:\]]+):(?P<hi>[^:\]]+)\]\Z")
_CATEGORIES = re.compile(r"-?\d{1,12}(?::-?\d{1,12})*\Z")
_INFINITE = ("inf", "-inf", "+inf")
_OBJECTIVE = re.compile(r"(?:binary sigmoid:(?P<sigmoid>\S+)|cross_entropy|cross_entropy_lambda)\Z")

HEADER_KEYS = ("version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
               "average_output", "feature_names", "feature_infos", "monotone_constraints", "tree_sizes")
NODE_FLOATS = ("split_gain", "internal_value", "internal_weight")  # per internal node; informative only
LEAF_FLOATS = ("leaf_weight",)
TREE_KEYS = ("num_leaves", "num_cat", "split_feature", "split_gain", "threshold", "decision_type", "left_child",
             "right_child", "leaf_value", "leaf_weight", "leaf_count", "internal_value", "internal_weight",
             "internal_count", "cat_boundaries", "cat_threshold", "is_linear", "shrinkage")
_CATEGORICAL, _MISSING_SHIFT = 1, 2


class ModelTextError(UsageError, ValueError):
    """The model text is not one LightGBM can load safely; says where and what."""


def checked_model_text(data: bytes, feature_names: Sequence[str]) -> str:
    """The model in ``data``, rebuilt from checked parts, for ``lightgbm.Booster(model_str=...)``.
    ``feature_names``: the columns the model must use, in order (as LightGBM spells them)."""
    if b"\0" in data:
        raise ModelTextError("holds a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelTextError(f"not UTF-8 text (byte {exc.start})") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if not lines or lines[0] != "tree":
        raise ModelTextError("does not start with LightGBM's 'tree' line")
    at, header = _pairs(lines, 1, HEADER_KEYS, "header")
    out = ["tree", *_checked_header(header, list(feature_names)), ""]
    n_trees = 0
    while True:
        at = _skip_blank(lines, at)
        if at >= len(lines):
            raise ModelTextError("ends before 'end of trees' (truncated?)")
        if lines[at] == "end of trees":
            break
        if lines[at] != f"Tree={n_trees}":
            raise ModelTextError(f"line {at + 1}: expected 'Tree={n_trees}' or 'end of trees'")
        at, fields = _pairs(lines, at + 1, TREE_KEYS, f"tree {n_trees}")
        try:
            out += [f"Tree={n_trees}", *_checked_tree(fields, len(feature_names)), "", ""]
        except ModelTextError as exc:
            raise ModelTextError(f"tree {n_trees}: {exc}") from None
        n_trees += 1
    if n_trees == 0:
        raise ModelTextError("holds no trees")
    return "\n".join([*out, "end of trees", ""])


def _skip_blank(lines: list[str], at: int) -> int:
    while at < len(lines) and not lines[at]:
        at += 1
    return at


def _pairs(lines: list[str], at: int, known: tuple[str, ...], where: str) -> tuple[int, dict[str, str]]:
    """``key=value`` lines from ``at`` to the next blank line (or a ``Tree=`` line)."""
    fields: dict[str, str] = {}
    while at < len(lines) and lines[at] and not lines[at].startswith("Tree="):
        key, sep, value = lines[at].partition("=")
        if not sep or key not in known:
            raise ModelTextError(f"line {at + 1}: unexpected {lines[at][:40]!r} in the {where}")
        if key in fields:
            raise ModelTextError(f"line {at + 1}: {key} given twice in the {where}")
        fields[key] = value
        at += 1
    return at, fields


def _require(fields: dict[str, str], key: str) -> str:
    if key not in fields:
        raise ModelTextError(f"{key} is missing")
    return fields[key]


def _int(token: str, key: str, lo: int, hi: int) -> int:
    if not _INT.match(token) or not lo <= int(token) <= hi:
        raise ModelTextError(f"{key}: {token[:20]!r} is not a whole number from {lo} to {hi}")
    return int(token)


def _float(token: str, key: str, *, infinite: bool = False) -> float:
    """A decimal number; ``infinite``: also ``inf``/``-inf`` (LightGBM writes them for a split
    threshold at the end of a feature's range, and for some gains), never NaN."""
    if infinite and token in _INFINITE:
        return float(token)
    if not _FLOAT.match(token) or not math.isfinite(value := float(token)):
        raise ModelTextError(f"{key}: {token[:20]!r} is not a finite number")
    return value


def _tokens(fields: dict[str, str], key: str, n: int, *, optional: bool = False) -> list[str]:
    """The ``n`` space-separated values of ``key`` (an optional key may be empty instead)."""
    value = fields.get(key, "") if optional else _require(fields, key)
    tokens = value.split()
    if optional and not tokens:
        return []
    if len(tokens) != n:
        raise ModelTextError(f"{key} has {len(tokens)} values, expected {n}")
    return tokens


def _checked_header(header: dict[str, str], names: list[str]) -> list[str]:
    n = len(names)
    if _require(header, "version") not in ("v3", "v4"):
        raise ModelTextError(f"version {header['version'][:20]!r} is not one this LightGBM reads")
    _int(_require(header, "num_class"), "num_class", 1, 1)
    _int(_require(header, "num_tree_per_iteration"), "num_tree_per_iteration", 1, 1)
    _int(header.get("label_index", "0"), "label_index", 0, 0)
    _int(_require(header, "max_feature_idx"), "max_feature_idx", n - 1, n - 1)
    objective = _OBJECTIVE.match(_require(header, "objective"))
    if objective is None:
        raise ModelTextError(f"objective {header['objective'][:40]!r} is not a binary classifier")
    if objective["sigmoid"] is not None and _float(objective["sigmoid"], "objective sigmoid") <= 0:
        raise ModelTextError("objective sigmoid must be positive")
    if header.get("average_output", "") != "":
        raise ModelTextError("average_output takes no value")
    if _tokens(header, "feature_names", n) != names:
        raise ModelTextError("feature_names differ from the model's schema.json columns")
    for token in _tokens(header, "feature_infos", n):
        bounds = _RANGE.match(token)
        if bounds:
            _float(bounds["lo"], "feature_infos"), _float(bounds["hi"], "feature_infos")
        elif token != "none" and not _CATEGORIES.match(token):
            raise ModelTextError(f"feature_infos: {token[:20]!r} is not a range, a category list or none")
    monotone = _tokens(header, "monotone_constraints", n, optional=True)
    for token in monotone:
        _int(token, "monotone_constraints", -1, 1)
    kept = ["version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective"]
    lines = [f"{key}={header[key]}" for key in kept if key in header]
    if "average_output" in header:
        lines.append("average_output")
    lines += [f"feature_names={' '.join(names)}", f"feature_infos={' '.join(header['feature_infos'].split())}"]
    if monotone:
        lines.append(f"monotone_constraints={' '.join(monotone)}")
    return lines


def _checked_statistics(fields: dict[str, str], n: int, floats: tuple[str, ...], count: str) -> dict[str, list[str]]:
    """The optional per-leaf or per-node statistics: ``floats`` (any float, infinities too) and the
    ``count`` of training rows, each ``n`` tokens when present."""
    values: dict[str, list[str]] = {}
    for key in floats:
        values[key] = _tokens(fields, key, n, optional=True)
        for token in values[key]:
            _float(token, key, infinite=True)
    values[count] = _tokens(fields, count, n, optional=True)
    for token in values[count]:
        _int(token, count, 0, 2**62)
    return values


def _checked_tree(fields: dict[str, str], n_features: int) -> list[str]:
    leaves = _int(_require(fields, "num_leaves"), "num_leaves", 1, MAX_LEAVES)
    n_cat = _int(fields.get("num_cat", "0"), "num_cat", 0, leaves)
    if _int(fields.get("is_linear", "0"), "is_linear", 0, 1):
        raise ModelTextError("a linear tree (linear_tree), which prediction does not support")
    nodes = leaves - 1
    values: dict[str, list[str]] = {"leaf_value": _tokens(fields, "leaf_value", leaves)}
    for token in values["leaf_value"]:
        _float(token, "leaf_value")
    values.update(_checked_statistics(fields, leaves, LEAF_FLOATS, "leaf_count"))
    values.update(_checked_statistics(fields, nodes, NODE_FLOATS, "internal_count"))
    shrinkage = fields.get("shrinkage", "1")
    _float(shrinkage, "shrinkage")
    required = ("split_feature", "threshold", "decision_type", "left_child", "right_child")
    for key in required:
        values[key] = _tokens(fields, key, nodes, optional=nodes == 0)
    for token in values["split_feature"]:
        _int(token, "split_feature", 0, n_features - 1)
    decision = [_int(t, "decision_type", 0, 15) for t in values["decision_type"]]
    categorical = _checked_categories(fields, n_cat, values, decision)
    for node, kind in enumerate(decision):
        if kind >> _MISSING_SHIFT == 3:
            raise ModelTextError(f"decision_type {kind} of node {node} names no missing-value rule")
        if not kind & _CATEGORICAL:
            _float(values["threshold"][node], "threshold", infinite=True)
    _check_shape([_int(t, "left_child", -leaves, max(nodes - 1, 0)) for t in values["left_child"]],
                 [_int(t, "right_child", -leaves, max(nodes - 1, 0)) for t in values["right_child"]], leaves)
    lines = [f"num_leaves={leaves}", f"num_cat={n_cat}"]
    for key in ("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child",
                "leaf_value", "leaf_weight", "leaf_count", "internal_value", "internal_weight", "internal_count"):
        lines.append(f"{key}={' '.join(values[key])}")
    if n_cat:
        lines += [f"cat_boundaries={' '.join(categorical[0])}", f"cat_threshold={' '.join(categorical[1])}"]
    return [*lines, "is_linear=0", f"shrinkage={shrinkage}"]


def _checked_categories(fields: dict[str, str], n_cat: int, values: dict[str, list[str]],
                        decision: list[int]) -> tuple[list[str], list[str]]:
    """A categorical split's threshold is an index into ``cat_boundaries``, whose entries
    are offsets into the ``cat_threshold`` bitset words."""
    splits = [node for node, kind in enumerate(decision) if kind & _CATEGORICAL]
    if len(splits) != n_cat:
        raise ModelTextError(f"num_cat is {n_cat} but {len(splits)} splits are categorical")
    if not n_cat:
        return [], []
    boundaries = _tokens(fields, "cat_boundaries", n_cat + 1)
    words = fields.get("cat_threshold", "").split()
    offsets = [_int(t, "cat_boundaries", 0, len(words)) for t in boundaries]
    if offsets[0] != 0 or offsets[-1] != len(words) or any(a > b for a, b in zip(offsets, offsets[1:])):
        raise ModelTextError("cat_boundaries do not partition cat_threshold")
    for token in words:
        _int(token, "cat_threshold", 0, 2**32 - 1)
    for node in splits:
        _int(values["threshold"][node], "threshold (category index)", 0, n_cat - 1)
    return boundaries, words


def _check_shape(left: list[int], right: list[int], leaves: int) -> None:
    """From node 0 every internal node and every leaf (``~child``) is reached exactly once."""
    if leaves == 1:
        return
    seen_nodes, seen_leaves = {0}, set()
    stack = [0]
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child >= 0:
                if child in seen_nodes:
                    raise ModelTextError(f"node {child} is reached twice (left_child/right_child form no tree)")
                seen_nodes.add(child)
                stack.append(child)
            else:
                if ~child in seen_leaves:
                    raise ModelTextError(f"leaf {~child} is reached twice (left_child/right_child form no tree)")
                seen_leaves.add(~child)
    if len(seen_nodes) != leaves - 1 or len(seen_leaves) != leaves:
        raise ModelTextError("left_child/right_child leave nodes or leaves unreachable")
