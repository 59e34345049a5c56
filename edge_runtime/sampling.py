"""Next-token choice from a logits vector: greedy, or temperature + top-k + top-p (nucleus) sampling.

Pure numpy.  Random draws come from a numpy Generator seeded once per Sampler, so a given seed
and the same logits sequence always give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplerConfig:
    """How to pick tokens.

    temperature: 0 means greedy (argmax, ties go to the lowest id); > 0 divides the logits.
    top_k: keep only the k most likely tokens before sampling; 0 means no limit.
    top_p: keep the smallest set of most likely tokens whose probability mass reaches top_p
        (always at least one token); 1.0 means no limit.
    seed: seed of the random generator (None: fresh entropy, not reproducible).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or int(self.top_k) != self.top_k or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = no limit), got {self.top_k!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax (temperature 0)."""
        return self.temperature == 0.0


def _check_logits(logits: np.ndarray) -> np.ndarray:
    values = np.asarray(logits, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("logits are empty")
    if np.isnan(values).any():
        raise ValueError("logits contain NaN")
    if not (values > -np.inf).any():
        raise ValueError("every logit is -inf: no token can be chosen")
    return values


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of softmax(logits / temperature) in float64, safe for large and -inf logits.

    If some logits are +inf, the probability is shared equally among those tokens.
    """
    values = _check_logits(logits)
    top = values.max()
    if top == np.inf:
        mask = values == np.inf
        return mask / mask.sum()
    scaled = (values - top) / temperature  # subtract the max first: exp never overflows
    weights = np.exp(scaled)
    return weights / weights.sum()


def token_logprob(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token] at temperature 1, as whisper's avg_logprob uses; -inf allowed.

    One max and one exp-sum over the vocabulary: cheap next to a decode step, and it never
    changes which token was chosen.
    """
    values = np.asarray(logits, dtype=np.float32).reshape(-1)
    top = float(values.max())
    if not np.isfinite(top):
        return 0.0 if values[token] == top else float("-inf")
    total = float(np.exp(values - top, dtype=np.float32).sum(dtype=np.float64))
    return float(values[token]) - top - float(np.log(total))


def filter_probs(probs: np.ndarray, top_k: int = 0, top_p: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The token ids kept by top-k then top-p, most likely first, and their renormalised probabilities.

    Ties are ordered by token id (a stable sort), so the result is deterministic.
    """
    order = np.argsort(-probs, kind="stable")
    order = order[probs[order] > 0]  # tokens with zero mass (masked by -inf) are never candidates
    if top_k > 0:
        order = order[:top_k]
    kept = probs[order]
    kept = kept / kept.sum()
    if top_p < 1.0:
        cumulative = np.cumsum(kept)
        # first position where the mass reaches top_p; keep it and everything before it
        n_keep = int(np.searchsorted(cumulative, top_p, side="left")) + 1
        n_keep = min(max(n_keep, 1), len(order))
        order, kept = order[:n_keep], kept[:n_keep]
        kept = kept / kept.sum()
    return order, kept


class Sampler:
    """Chooses the next token id from a logits vector according to a SamplerConfig."""

    def __init__(self, config: SamplerConfig | None = None) -> None:
        self.config = config or SamplerConfig()
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Restart the random generator (from `seed`, or the config's seed if None)."""
        self._rng = np.random.default_rng(self.config.seed if seed is None else seed)

    def probabilities(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidate token ids and the probabilities this sampler would draw them with."""
        cfg = self.config
        if cfg.greedy:
            return np.array([self.greedy(logits)]), np.array([1.0])
        return filter_probs(softmax(logits, cfg.temperature), cfg.top_k, cfg.top_p)

    @staticmethod
    def greedy(logits: np.ndarray) -> int:
        """Argmax of the logits; np.argmax returns the first (lowest) id on ties."""
        return int(np.argmax(_check_logits(logits)))

    def sample(self, logits: np.ndarray) -> int:
        """The next token id for a 1-D logits vector over the vocabulary."""
        if self.config.greedy:
            return self.greedy(logits)
        ids, probs = self.probabilities(logits)
        if len(ids) == 1:
            return int(ids[0])
        # inverse-CDF draw: one uniform number per call keeps the stream reproducible
        cumulative = np.cumsum(probs)
        u = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, u, side="right")), len(ids) - 1)
        return int(ids[index])
