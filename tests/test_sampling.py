"""Sampler: greedy, top-k, top-p, the drawn distribution and seeding."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.sampling import Sampler, SamplerConfig, filter_probs, softmax


def reference_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Straightforward softmax in Python floats, independent of the module under test."""
    import math

    scaled = [v / temperature for v in logits]
    top = max(scaled)
    weights = [math.exp(v - top) for v in scaled]
    total = sum(weights)
    return np.array([w / total for w in weights])


def test_greedy_is_argmax_and_ties_go_to_lowest_id():
    rng = np.random.default_rng(1)
    sampler = Sampler(SamplerConfig())
    for _ in range(20):
        logits = rng.standard_normal(1000).astype(np.float32)
        assert sampler.sample(logits) == int(np.argmax(logits))
    logits = np.array([0.0, 3.0, 1.0, 3.0, 3.0])
    assert sampler.sample(logits) == 1


def test_top_k_one_is_argmax_at_any_temperature():
    rng = np.random.default_rng(2)
    for temperature in (0.1, 1.0, 5.0, 100.0):
        sampler = Sampler(SamplerConfig(temperature=temperature, top_k=1, seed=0))
        for _ in range(10):
            logits = rng.standard_normal(500)
            assert sampler.sample(logits) == int(np.argmax(logits))


def test_softmax_matches_reference_and_survives_huge_logits():
    logits = np.array([1000.0, 999.0, -1000.0, 0.5])
    np.testing.assert_allclose(softmax(logits, 2.0), reference_softmax(logits, 2.0), rtol=1e-12)
    masked = softmax(np.array([0.0, -np.inf, 1.0]))
    assert masked[1] == 0.0 and np.isclose(masked.sum(), 1.0)


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.77, 0.9, 0.999])
def test_top_p_keeps_smallest_set_reaching_the_mass(top_p):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(50))
    ids, kept = filter_probs(probs, top_p=top_p)
    by_mass = np.sort(probs)[::-1]
    # kept tokens are exactly the most likely ones
    assert set(ids.tolist()) == set(np.argsort(-probs)[: len(ids)].tolist())
    # their original mass reaches top_p, and one fewer token would not
    assert probs[ids].sum() >= top_p - 1e-12
    assert by_mass[: len(ids) - 1].sum() < top_p
    np.testing.assert_allclose(kept, probs[ids] / probs[ids].sum())


def test_top_p_always_keeps_at_least_one_token():
    ids, kept = filter_probs(np.array([0.97, 0.02, 0.01]), top_p=1e-9)
    assert ids.tolist() == [0] and kept.tolist() == [1.0]


def test_top_k_then_top_p():
    probs = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    ids, kept = filter_probs(probs, top_k=3, top_p=0.7)
    # top-3 = ids 1, 3, 4 with mass 0.85; renormalised 0.47, 0.35, 0.18 -> first two reach 0.7
    assert ids.tolist() == [1, 3]
    np.testing.assert_allclose(kept, [0.4 / 0.7, 0.3 / 0.7])


def test_empirical_distribution_matches_softmax():
    logits = np.array([2.0, 1.0, 0.5, -1.0, 0.0])
    temperature = 0.8
    expected = reference_softmax(logits, temperature)
    sampler = Sampler(SamplerConfig(temperature=temperature, seed=1234))
    draws = 40_000
    counts = np.bincount([sampler.sample(logits) for _ in range(draws)], minlength=len(logits))
    observed = counts / draws
    # 5 standard errors per token: fails only if the distribution is wrong
    tolerance = 5 * np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(observed - expected) < tolerance), (observed, expected)


def test_empirical_distribution_with_top_k_never_draws_excluded_tokens():
    logits = np.array([3.0, 2.9, 2.8, 0.0, -1.0, 2.7])
    sampler = Sampler(SamplerConfig(temperature=1.0, top_k=3, seed=5))
    drawn = {sampler.sample(logits) for _ in range(3000)}
    assert drawn == {0, 1, 2}


def test_seed_reproducibility_and_reset():
    rng = np.random.default_rng(7)
    logit_rows = rng.standard_normal((200, 64))
    config = SamplerConfig(temperature=1.3, top_k=20, top_p=0.9, seed=42)
    first = [Sampler(config).sample(row) for row in logit_rows[:1]]
    a, b = Sampler(config), Sampler(config)
    run_a = [a.sample(row) for row in logit_rows]
    run_b = [b.sample(row) for row in logit_rows]
    assert run_a == run_b
    assert run_a[:1] == first
    a.reset()
    assert [a.sample(row) for row in logit_rows] == run_a
    other = Sampler(SamplerConfig(temperature=1.3, top_k=20, top_p=0.9, seed=43))
    assert [other.sample(row) for row in logit_rows] != run_a


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)


def test_bad_logits_raise():
    sampler = Sampler(SamplerConfig(temperature=1.0, seed=0))
    with pytest.raises(ValueError, match="NaN"):
        sampler.sample(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="-inf"):
        sampler.sample(np.array([-np.inf, -np.inf]))
