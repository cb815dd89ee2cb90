"""Sparse x dense products (lmrec.models.nn.spmm): every kernel equals the dense product, forward and backward;
which kernel a matrix takes; AlphaRec's rule for its users' first layer."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lmrec.models.cf.alpharec import users_via_items
from lmrec.models.nn.spmm import SHORT_ROWS, ScipyCSR, SparseMatrix, product


def random_csr(rows: int, cols: int, per_row: float, seed: int = 0) -> sp.csr_matrix:
    """A float32 matrix with about ``per_row`` non-zeros per row, some rows empty (zero users)."""
    rng = np.random.default_rng(seed)
    m = sp.random(rows, cols, density=per_row / cols, format="csr", dtype=np.float32, random_state=rng)
    m = m.tolil()
    m[1, :] = 0  # an empty row
    return sp.csr_matrix(m)


@pytest.mark.parametrize("kernel", ["torch", "scipy"])
@pytest.mark.parametrize("per_row", [2.0, 30.0])
def test_product_equals_the_dense_product_forward_and_backward(kernel, per_row):
    m = random_csr(57, 43, per_row)
    dense = torch.from_numpy(m.toarray())
    a, a_t = SparseMatrix(m, kernel), SparseMatrix(m.T, kernel)
    x = torch.randn(43, 11, requires_grad=True)
    g = torch.randn(57, 11)
    y = product(a, a_t, x)
    (y * g).sum().backward()
    torch.testing.assert_close(y, dense @ x.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, dense.T @ g, rtol=1e-5, atol=1e-6)
    assert y.dtype == torch.float32 and a.kernel == kernel


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_scipy_row_blocks_give_the_same_product(threads):
    """Rows split in blocks of equal non-zeros over threads: the same numbers as one block, every row once."""
    m = random_csr(400, 300, 40.0, seed=3)  # 400 x 300 x 40 non-zeros x 64 columns: large enough to split
    x = torch.randn(300, 128)
    split = ScipyCSR(m, threads)
    blocks = split.blocks(threads)
    assert blocks[0][0] == 0 and blocks[-1][1] == 400
    assert all(a[1] == b[0] for a, b in zip(blocks[:-1], blocks[1:]))
    torch.testing.assert_close(split.matmul(x), ScipyCSR(m, 1).matmul(x), rtol=0, atol=0)
    torch.testing.assert_close(split.matmul(x), torch.from_numpy(m.toarray()) @ x, rtol=1e-5, atol=1e-5)


def test_scipy_product_takes_any_float_input_and_refuses_a_wrong_shape():
    m = random_csr(9, 5, 2.0)
    x = torch.randn(5, 3, dtype=torch.float64).to(torch.bfloat16)
    out = SparseMatrix(m, "scipy").matmul(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(m.toarray()) @ x.float(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cannot multiply"):
        ScipyCSR(m).matmul(torch.randn(4, 3))


def test_torch_kernel_sums_in_fp32_under_bf16_autocast():
    m = random_csr(20, 30, 12.0)
    x = torch.randn(30, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SparseMatrix(m, "torch").matmul(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(m.toarray()) @ x, rtol=1e-5, atol=1e-6)


def test_kernel_choice_follows_the_row_length():
    assert SparseMatrix(random_csr(500, 400, 3.0)).kernel == "scipy"  # short rows
    assert SparseMatrix(random_csr(500, 400, 3 * SHORT_ROWS)).kernel == "torch"  # long rows
    assert SparseMatrix(random_csr(500, 400, 3.0), "torch").kernel == "torch"
    moved = SparseMatrix(random_csr(500, 400, 3.0)).to("cpu")
    assert moved.kernel == "scipy" and moved.tensor.device.type == "cpu"


def test_users_via_items_rule():
    """Amazon Games and Industrial (many users per edge) through the items, MovieLens-sized data dense; bf16 (dense
    products ~5x faster) moves the line toward the dense layer."""
    games = dict(n_users=50546, n_items=16859, nnz=173545, d=384)
    industrial = dict(n_users=8317, n_items=24000, nnz=22824, d=384)
    ml1m = dict(n_users=6040, n_items=3260, nnz=501938, d=384)
    ml100k = dict(n_users=943, n_items=1682, nnz=40000, d=384)
    assert users_via_items(**games) and users_via_items(**industrial)
    assert not users_via_items(**ml1m) and not users_via_items(**ml100k)
    wide = dict(n_users=50546, n_items=16859, nnz=400000, d=384)
    assert users_via_items(**wide, precision="fp32") and not users_via_items(**wide, precision="bf16")
