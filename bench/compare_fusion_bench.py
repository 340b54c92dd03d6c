"""Our ISO-C, ISO-CTS, TSV-Merge and KnOTS-TIES against fusion_bench's code on the same tensors.

fusion_bench is not a dependency of the project, and its package ``__init__`` imports lightning,
hydra, transformers and more. Only four plain-torch files are needed, so install it without its
dependencies and run this from the repository root:

    python3 -m venv /tmp/fb && /tmp/fb/bin/pip install "torch==2.13.0" numpy
    /tmp/fb/bin/pip install --no-deps fusion_bench
    /tmp/fb/bin/python bench/compare_fusion_bench.py

The files are loaded by path (fusion_bench's ``__init__`` is never run): ``method/isotropic_merging/
iso_utils.py`` (``iso_c``, ``iso_cts``), ``method/task_singular_vector/utils/TSVM_utils.py``
(``compute_and_sum_svd_mem_reduction``), ``method/knots/knots_utils.py`` (``subspace_alignment``)
and ``method/ties_merging/ties_merging_utils.py`` (``ties_merging``), plus the two helpers they
import (``utils/timer.py``, ``utils/type.py``). fusion_bench has no KnOTS-TIES method class, only
the alignment; its KnOTS-TIES here is that alignment followed by its own TIES on the stacked
representations ``diag(σ)·V_iᵀ`` (the KnOTS reference's pipeline), then ``U @ merged``.

Inputs, float64 throughout: N dense task vectors τ_i (m × n) of a chosen rank r_i, handed to
fusion_bench as they are (scaled by the coefficient c_i first, as our methods weight a task vector
before merging) and to ours as the exact LoRA ``B_i = U_i·diag(σ_i)``, ``A_i = V_iᵀ`` from the
compact SVD of τ_i cut at its numerical rank (scaling 1). The global λ multiplies fusion_bench's
output. Two regimes:

- **full rank** (r_i = min(m, n)): our numerical ranks are min(m, n), where our definitions are
  fusion_bench's; any difference there is rounding (or a documented choice, see the notes).
- **low rank** (r_i ≪ min(m, n), a LoRA): ours works on the numerical rank; fusion_bench's
  full-size SVDs give weight to null-space directions (the LoRA pitfall of METHODS.md §3, §7d).
  The table then also shows the share of each result's Frobenius norm outside the adapters'
  column × row span (0 for ours by construction, except KnOTS-TIES: its TIES trims the
  representations entry by entry in input coordinates, which leaves the adapters' row span in
  both implementations alike; its column space stays U's).

Printed per case: ``max |ours − fusion_bench| / max |fusion_bench|``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osrm_gui.core.merge.base import LayerContext, LoraDelta
from osrm_gui.core.merge.iso import ISO_C, ISO_CTS
from osrm_gui.core.merge.knots import KNOTS_TIES, knots_align
from osrm_gui.core.merge.tsv import METHOD as TSV

DTYPE = torch.float64
LAM = 1.3


# ---------------------------------------------------------------- fusion_bench, file by file
def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_fusion_bench():
    """fusion_bench's four merge-utility files, without running its package ``__init__``."""
    spec = importlib.util.find_spec("fusion_bench")  # locates the package, does not import it
    if spec is None:
        raise SystemExit("fusion_bench is not installed in this interpreter (see the docstring)")
    root = Path(spec.submodule_search_locations[0])
    # empty package shells, so that the files' `from fusion_bench.utils[.type] import ...` resolve
    for name, path in (("fusion_bench", root), ("fusion_bench.utils", root / "utils")):
        shell = types.ModuleType(name)
        shell.__path__ = [str(path)]
        sys.modules[name] = shell
    _load("fusion_bench.utils.type", root / "utils" / "type.py")
    sys.modules["fusion_bench.utils"].timeit_context = _load("fusion_bench.utils.timer",
                                                             root / "utils" / "timer.py").timeit_context
    iso = _load("fb_iso_utils", root / "method" / "isotropic_merging" / "iso_utils.py")
    tsvm = _load("fb_tsvm_utils", root / "method" / "task_singular_vector" / "utils" / "TSVM_utils.py")
    knots = _load("fb_knots_utils", root / "method" / "knots" / "knots_utils.py")
    ties = _load("fb_ties_utils", root / "method" / "ties_merging" / "ties_merging_utils.py")
    try:
        from importlib.metadata import version
        fb_version = version("fusion_bench")
    except Exception:  # noqa: BLE001
        fb_version = "?"
    return iso, tsvm, knots, ties, fb_version, root


FB_ISO, FB_TSVM, FB_KNOTS, FB_TIES, FB_VERSION, FB_ROOT = load_fusion_bench()


def quiet(fn, *args, **kwargs):
    """fusion_bench prints a line per key; keep the table readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def fb_iso_c(tasks):
    return quiet(FB_ISO.iso_c, [{"w": t} for t in tasks], accelerator="cpu")["w"]


def fb_iso_cts(tasks, fraction):
    return quiet(FB_ISO.iso_cts, [{"w": t} for t in tasks], fraction, accelerator="cpu")["w"]


def fb_tsv(tasks):
    return quiet(FB_TSVM.compute_and_sum_svd_mem_reduction, [{"w": t} for t in tasks], accelerator="cpu")["w"]


def fb_knots_ties(tasks, top_k):
    """Alignment (knots_utils.subspace_alignment) + TIES (ties_merging_utils.ties_merging), ``U @ merged``."""
    U, S, Vhs = FB_KNOTS.subspace_alignment(list(tasks), svd_dtype=torch.float64)
    reps = torch.stack([S[:, None] * Vh for Vh in Vhs])  # [N, k, n]
    merged = quiet(FB_TIES.ties_merging, reps.reshape(len(tasks), -1), reset_thresh=top_k, merge_func="mean")
    return U @ merged.reshape(reps.shape[1:])


def fb_ties_kept(d: int, top_k: float) -> int:
    """How many entries of a length-d vector fusion_bench's ``topk_values_mask`` keeps (measured)."""
    x = torch.randn(1, d, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    return int((FB_TIES.topk_values_mask(x, K=top_k)[0] != 0).sum())


# ---------------------------------------------------------------- inputs and ours
def task_vectors(shape, ranks, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    m, n = shape
    return [scale * (torch.randn(m, r, generator=g, dtype=DTYPE) @ torch.randn(r, n, generator=g, dtype=DTYPE))
            / (r * n) ** 0.5 for r in ranks]


def exact_lora(tau: torch.Tensor, index: int) -> LoraDelta:
    """``B = U·diag(σ)``, ``A = Vᵀ`` from the compact SVD of τ, on its numerical rank (exact)."""
    U, s, Vh = torch.linalg.svd(tau, full_matrices=False)
    r = int((s > max(tau.shape) * torch.finfo(tau.dtype).eps * s[0]).sum())
    return LoraDelta(index, Vh[:r].contiguous(), (U[:, :r] * s[:r]).contiguous(), 1.0)


def ours(method, deltas, coefficients, params):
    ctx = LayerContext("layer", tuple(coefficients), LAM, method.resolve_params(params), 1234)
    return method.merge_layer(deltas, ctx).dense()


def span_basis(M: torch.Tensor) -> torch.Tensor:
    U, s, _ = torch.linalg.svd(M, full_matrices=False)
    return U[:, : int((s > max(M.shape) * torch.finfo(M.dtype).eps * s[0]).sum())]


def outside_share(X, Qc, Qr):
    """‖X − P_col X P_row‖_F / ‖X‖_F for the adapters' column and row spans."""
    inside = Qc @ (Qc.T @ X @ Qr) @ Qr.T
    norm = float(torch.linalg.norm(X))
    return float(torch.linalg.norm(X - inside)) / (norm if norm else 1.0)


def relative_difference(a, b):
    scale = float(b.abs().max())
    return float((a.double() - b.double()).abs().max()) / (scale if scale else 1.0)


# ---------------------------------------------------------------- cases
# (regime, shape, ranks, seed, coefficient sets, scale of τ)
INPUTS = [
    ("full", (48, 40), (40, 40, 40), 0, [(1.0, 1.0, 1.0), (0.5, 1.0, 1.5)], 1.0),
    ("full", (40, 48), (40, 40, 40, 40), 1, [(1.0, 1.0, 1.0, 1.0), (0.4, 0.7, 1.0, 1.3)], 1.0),
    ("full", (768, 768), (768, 768, 768), 2, [(0.5, 1.0, 1.5)], 1.0),
    ("low", (48, 40), (4, 8, 6), 3, [(1.0, 1.0, 1.0), (0.5, 1.0, 1.5)], 1.0),
    ("low", (768, 768), (16, 16, 8), 4, [(0.5, 1.0, 1.5)], 1.0),
    # σ of [τ_1|…|τ_N] straddle fusion_bench's absolute KnOTS cut (σ > 1e-4); KnOTS only
    ("small", (48, 40), (40, 40, 40), 5, [(1.0, 1.0, 1.0)], 1e-4),
]
TOP_K = 0.2  # KnOTS-TIES default (authors' ViT-B/32 r16 config)

NOTES = {
    "knots_ties/top-k": "def: fb's topk_values_mask keeps int(K·d)+1 entries (≥ k-th smallest), ours int(K·d)",
    "iso_c/low": "def: fb gives mean σ (over min(m,n) values, R nonzero) to all min(m,n) directions",
    "iso_cts/low": "def: fb k=min(m,n): common/task sizes from it, null directions get mean σ",
    "tsv/low": "def: fb keeps min(m,n)/N vectors per task incl. σ=0 ones; they bend the polar factor",
    "knots/small": "def: fb cuts σ > 1e-4 absolute, ours σ > 1e-5·σ_max (drops real components there)",
}


def run_cases():
    rows = []
    for regime, shape, ranks, seed, coefficient_sets, scale in INPUTS:
        taus = task_vectors(shape, ranks, seed, scale)
        deltas = [exact_lora(t, i) for i, t in enumerate(taus)]
        Qc = span_basis(torch.cat([d.B for d in deltas], dim=1))
        Qr = span_basis(torch.cat([d.A for d in deltas], dim=0).T)
        for coefficients in coefficient_sets:
            weighted = [c * t for c, t in zip(coefficients, taus)]
            cases = []
            if regime != "small":
                cases += [
                    ("iso_c", "", lambda: ours(ISO_C, deltas, coefficients, {}), lambda: LAM * fb_iso_c(weighted)),
                    *[("iso_cts", f"f={f}",
                       (lambda f=f: ours(ISO_CTS, deltas, coefficients, {"common_space_fraction": f})),
                       (lambda f=f: LAM * fb_iso_cts(weighted, f))) for f in (0.8, 0.5)],
                    ("tsv", "", lambda: ours(TSV, deltas, coefficients, {}), lambda: LAM * fb_tsv(weighted)),
                ]
            _, reps = knots_align(deltas, coefficients)
            d = reps.shape[1] * reps.shape[2]  # entries of one task's representation (ours)
            kept = fb_ties_kept(d, TOP_K)
            matched = (kept + 0.5) / d  # our top_k giving int(top_k·d) = fusion_bench's count
            cases += [
                ("knots_ties", f"top_k={TOP_K}", lambda: ours(KNOTS_TIES, deltas, coefficients, {"top_k": TOP_K}),
                 lambda: LAM * fb_knots_ties(weighted, TOP_K)),
                ("knots_ties", f"top_k≡fb ({kept}/{d})",
                 lambda m=matched: ours(KNOTS_TIES, deltas, coefficients, {"top_k": m}),
                 lambda: LAM * fb_knots_ties(weighted, TOP_K)),
            ]
            for name, label, ours_fn, fb_fn in cases:
                t0 = time.perf_counter()
                got, ref = ours_fn(), fb_fn()
                seconds = time.perf_counter() - t0
                diff = relative_difference(got, ref)
                out_ours = out_fb = None
                if regime == "low":
                    out_ours, out_fb = outside_share(got, Qc, Qr), outside_share(ref, Qc, Qr)
                note = ""
                if name == "knots_ties" and label.startswith("top_k=") and regime != "small":
                    note = NOTES["knots_ties/top-k"]
                elif regime == "low" and name != "knots_ties":
                    note = NOTES[f"{name}/low"]
                elif regime == "small":
                    k_fb = FB_KNOTS.subspace_alignment(weighted, svd_dtype=torch.float64)[0].shape[1]
                    note = (NOTES["knots/small"] + f": k = {reps.shape[1]} ours, {k_fb} fb"
                            + ("" if label.startswith("top_k≡") else "; + top-k count"))
                rows.append((regime, name, label, f"{shape[0]}×{shape[1]}", ranks, coefficients, diff,
                             out_ours, out_fb, seconds, note))
                print(f"  done {regime:5s} {name:10s} {label:26s} {shape!s:10s} {diff:.2e} ({seconds:.1f}s)",
                      file=sys.stderr, flush=True)
    return rows


def main() -> int:
    torch.set_num_threads(1)
    print(f"fusion_bench {FB_VERSION} at {FB_ROOT}, torch {torch.__version__}, float64, λ = {LAM}")
    print("ours: LoRA B = U·diag(σ), A = Vᵀ from each τ's compact SVD at its numerical rank; "
          "fusion_bench: the dense c_i·τ_i")
    rows = run_cases()

    def fmt(x):
        return "-" if x is None else f"{x:.2e}"

    header = (f"{'regime':6s} {'method':10s} {'params':26s} {'shape':8s} {'ranks':16s} {'coefficients':22s} "
              f"{'rel diff':>9s} {'out ours':>9s} {'out fb':>9s}  note")
    print()
    print("rel diff = max |ours − fusion_bench| / max |fusion_bench|;  out = ‖X − P_col X P_row‖_F / ‖X‖_F "
          "(share outside the adapters' spans; low rank only: at full rank the span is everything)")
    print(header)
    print("-" * len(header))
    for regime, name, label, shape, ranks, coefficients, diff, out_ours, out_fb, _, note in rows:
        ranks_s = str(ranks) if len(set(ranks)) > 1 else f"{ranks[0]}×{len(ranks)}"
        print(f"{regime:6s} {name:10s} {label:26s} {shape:8s} {ranks_s:16s} {str(coefficients):22s} "
              f"{diff:9.2e} {fmt(out_ours):>9s} {fmt(out_fb):>9s}  {note}")
    print("KnOTS-TIES 'out': its TIES trims diag(σ)·V_iᵀ entry by entry in input coordinates, which leaves "
          "the adapters' row span in both implementations alike")
    same = [r[6] for r in rows if not r[10]]
    by_design = [r[6] for r in rows if r[10]]
    print()
    print(f"largest relative difference where the definitions differ by design (see notes): {max(by_design):.2e}")
    print(f"largest relative difference (same definition: full rank, and KnOTS at fusion_bench's top-k count): "
          f"{max(same):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
