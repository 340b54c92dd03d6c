"""Time the OSRM subspace of one layer for input sizes up to 8192 (cov: eigh of the
d × d second moment; mean: SVD of the other tasks' means). CUDA is used when present.

    .venv/bin/python bench/osrm_subspace.py [--sizes 1024,4096,8192] [--rank 16] [--tasks 4]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,4096,8192")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=4, help="other tasks whose statistics are pooled")
    args = parser.parse_args()

    from osrm_gui.core.osrm.features import LayerStats
    from osrm_gui.core.osrm.subspaces import cov_subspace, mean_subspace

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {device}, torch {torch.__version__}, rank {args.rank}, {args.tasks} other tasks")
    for d in map(int, args.sizes.split(",")):
        generator = torch.Generator().manual_seed(0)
        others = []
        for _ in range(args.tasks):
            # a few hundred token rows: eigh costs the same whatever the Gram holds, and this keeps set-up cheap
            rows = torch.randn(256, d, generator=generator, dtype=torch.float64)
            others.append(LayerStats(rows.shape[0], rows.sum(0), rows.T @ rows))
        for name, fn in (("cov", cov_subspace), ("mean", mean_subspace)):
            started = time.perf_counter()
            A = fn(others, args.rank)
            seconds = time.perf_counter() - started
            error = float(torch.linalg.matrix_norm(A @ A.T - torch.eye(args.rank, dtype=A.dtype)))
            print(f"d={d:5d} {name:4s}: {seconds:7.2f} s   ‖AAᵀ − I‖_F = {error:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
