"""Our Square attack against torchattacks 3.5.1's, a test-only reference.

Same model (the small trained CNN), same images, same ε, p_init and number of queries
per image (torchattacks spends one query on its initialization on top of
``n_queries``, so it gets ``n_queries - 1``). Both run the authors' algorithm; they
differ in that torchattacks draws ONE window position and sign pattern per iteration for
the whole batch, never places a window at the last offset (``randint(0, h - s)``, as the
authors' numpy code) and does not redraw proposals that change nothing, while ours draws
per image, covers every offset and redraws no-op proposals. Random search is noisy (and
theirs, correlated across the batch, more so), so the success counts are summed over
eight seeds; ours must not fool fewer than theirs by more than three standard deviations
of the difference of two binomial counts (an implementation that is worse fails by far
more: a search that keeps no proposals fools almost none).

NES is not in torchattacks (its SPSA estimates gradients with Rademacher directions,
a different attack), so there is no NES comparison.
"""

from __future__ import annotations

import pytest
import torch

from training.attacks import create_attack

from .conftest import lfw_images

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

ta = pytest.importorskip("torchattacks")


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run hundreds of tiny batched steps, where intra-op threads only add
    synchronization (and stall on a busy machine). The session's models are trained
    before this runs (fixtures of wider scope come first), so they are unchanged."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_square_fools_at_least_as_many_as_torchattacks(small_model):
    images, labels = lfw_images()
    with torch.no_grad():
        right = small_model(images).argmax(1) == labels
    faces = torch.nonzero(right & (labels == 1)).flatten()[:24]
    others = torch.nonzero(right & (labels == 0)).flatten()[:24]
    x, y = images[torch.cat([faces, others])], labels[torch.cat([faces, others])]
    budget = {"eps": 48 / 255, "p_init": 0.8}
    ours = theirs = 0
    for seed in range(8):
        run = create_attack("square", small_model, n_queries=60, seed=seed, **budget).run(x, y)
        assert (run.queries <= 60).all()
        ours += int(run.success.sum())
        torch.manual_seed(seed)
        adv = ta.Square(small_model, n_queries=59, seed=seed, **budget)(x.clone(), y.clone())
        with torch.no_grad():
            theirs += int((small_model(adv).argmax(1) != y).sum())
    assert theirs > 0
    n = 8 * len(x)
    var = sum(k * (1 - k / n) for k in (ours, theirs))  # n p (1 - p) for each count
    assert ours >= theirs - 3 * var**0.5, (ours, theirs)
