"""Our DELLA, Model Breadcrumbs and SCE against mergekit's own merge code on the same tensors.

mergekit is not a dependency of the project; run this with an interpreter that has it, from the
repository root, e.g.

    python3 -m venv /tmp/mk && /tmp/mk/bin/pip install "torch==2.13.0" mergekit
    /tmp/mk/bin/python bench/compare_mergekit.py

For each case it merges random LoRA updates (float32, base model 0 so that mergekit's task
vectors are exactly ours) once with our method and once with mergekit's ``merge_group`` (the
DELLA masks drawn after ``torch.manual_seed`` with our layer seed), and prints the largest
absolute difference relative to the largest entry of mergekit's result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorGroup

from osrm_gui.core.merge.base import LayerContext, LoraDelta
from osrm_gui.core.merge.breadcrumbs import BREADCRUMBS, BREADCRUMBS_TIES
from osrm_gui.core.merge.della import DELLA, DELLA_LINEAR
from osrm_gui.core.merge.sce import METHOD as SCE


def lora_deltas(shape, ranks, seed):
    g = torch.Generator().manual_seed(seed)
    d_out, d_in = shape
    return [LoraDelta(i, torch.randn(r, d_in, generator=g) / d_in**0.5, 1e-2 * torch.randn(d_out, r, generator=g), 2.0)
            for i, r in enumerate(ranks)]


def mergekit_merge(name, dense, coefficients, lam, seed, **per_model):
    """mergekit's merge of base 0 + the task vectors ``dense`` (one float32 tensor each)."""
    base = torch.zeros_like(dense[0])
    group = TensorGroup.from_tensors([base, *dense], base_index=0)
    ids = [entry.id for entry in group.non_base]
    method = registry.get(name)
    torch.manual_seed(seed)
    if name == "sce":
        return method.merge_group(group, int8_mask=False, select_topk=per_model.get("select_topk", 1.0))
    params = {"int8_mask": False, "normalize": name == "della", "rescale": name.startswith("della"), "lambda": lam,
              "weight": dict(zip(ids, coefficients))}
    for key, value in per_model.items():
        params[key] = {i: value for i in ids}
    return method.merge_group(group, **params)


def ours(method, deltas, coefficients, lam, seed, **params):
    ctx = LayerContext("layer", tuple(coefficients), lam, method.resolve_params(params), seed)
    return method.merge_layer(deltas, ctx).dense()


def relative_difference(a, b):
    scale = float(b.abs().max())
    return float((a.double() - b.double()).abs().max()) / (scale if scale else 1.0)


CASES = [
    # (our method, mergekit name, our params, mergekit per-model params)
    (DELLA, "della", {"density": 0.5, "epsilon": 0.15}, {"density": 0.5, "epsilon": 0.15}),
    (DELLA, "della", {"density": 0.3, "epsilon": 0.25}, {"density": 0.3, "epsilon": 0.25}),
    (DELLA_LINEAR, "della_linear", {"density": 0.5, "epsilon": 0.15}, {"density": 0.5, "epsilon": 0.15}),
    (DELLA_LINEAR, "della_linear", {"density": 0.7, "epsilon": 0.1}, {"density": 0.7, "epsilon": 0.1}),
    (BREADCRUMBS, "breadcrumbs", {"density": 0.9, "gamma": 0.01}, {"density": 0.9, "gamma": 0.01}),
    (BREADCRUMBS, "breadcrumbs", {"density": 0.5, "gamma": 0.1}, {"density": 0.5, "gamma": 0.1}),
    (BREADCRUMBS_TIES, "breadcrumbs_ties", {"density": 0.9, "gamma": 0.01}, {"density": 0.9, "gamma": 0.01}),
    (BREADCRUMBS_TIES, "breadcrumbs_ties", {"density": 0.8, "gamma": 0.3}, {"density": 0.8, "gamma": 0.3}),
    (SCE, "sce", {"select_topk": 1.0}, {"select_topk": 1.0}),
    (SCE, "sce", {"select_topk": 0.3}, {"select_topk": 0.3}),
]


def main() -> int:
    worst = 0.0
    for shape, ranks, seed in [((64, 96), (8, 4, 16), 0), ((768, 768), (16, 16, 8, 8), 1)]:
        deltas = lora_deltas(shape, ranks, seed)
        dense = [d.dense() for d in deltas]
        for coefficients in [(1.0,) * len(ranks), tuple(0.4 + 0.3 * i for i in range(len(ranks)))]:
            lam, layer_seed = 1.3, 1234 + seed
            for method, name, params, theirs in CASES:
                if name == "sce":
                    # mergekit's SCE has no per-model weight: we scale δ_t by c_t first, so hand it c_t·δ_t
                    reference = lam * mergekit_merge(name, [c * x for c, x in zip(coefficients, dense)], None, 1.0,
                                                     layer_seed, **theirs)
                else:
                    reference = mergekit_merge(name, dense, coefficients, lam, layer_seed, **theirs)
                got = ours(method, deltas, coefficients, lam, layer_seed, **params)
                diff = relative_difference(got, reference)
                worst = max(worst, diff)
                print(f"{name:17s} {shape!s:11s} c={tuple(round(c, 2) for c in coefficients)!s:22s} "
                      f"{params!s:36s} max |ours − mergekit| / max |mergekit| = {diff:.2e}")
    print(f"largest relative difference: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
