"""Per-row sampling: draws follow the distribution, filters and seeds hold per row."""

from __future__ import annotations

import torch

from inferd.engine.generation import SamplingParams
from inferd.engine.sampling import SampleRow, new_generator, sample


def row(seed=None, **params) -> SampleRow:
    params.setdefault("max_tokens", 8)
    return SampleRow(SamplingParams(**params), new_generator(seed), [1, 2, 3])


def token_text(token_id: int) -> str:
    return f"<{token_id}>"


def test_draws_follow_the_distribution_and_never_pick_a_token_without_mass():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.0, 0.2, 0.0])
    logits = probs.log().unsqueeze(0)  # log(0) = -inf: no mass at all
    r = row(seed=7)
    counts = torch.zeros(6)
    for _ in range(6000):
        token = sample(logits, [r], token_text)[0][0]
        counts[token] += 1
    assert counts[[1, 3, 5]].sum() == 0
    freq = counts / counts.sum()
    assert torch.allclose(freq, probs, atol=0.025), freq


def test_a_seed_draws_the_same_tokens_whatever_shares_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 500)

    def run(rows, which):
        return [sample(logits[: len(rows)], rows, token_text)[0][which] for _ in range(20)]

    alone = run([row(seed=42)], 0)
    rows = [row(seed=1, temperature=0.7), row(seed=42), row(), row(seed=3, top_k=5)]
    logits[1] = logits[0]  # the seeded row sees the same logits as it did alone
    assert run(rows, 1) == alone


def test_top_k_top_p_min_p_and_greedy_rows_in_one_batch():
    torch.manual_seed(1)
    logits = torch.randn(4, 300).repeat(1, 1)
    ranked = logits.argsort(-1, descending=True)
    rows = [row(top_k=3), row(top_p=1e-6), row(temperature=0.0), row(min_p=0.999)]
    for _ in range(200):
        tokens, _ = sample(logits, rows, token_text)
        assert tokens[0] in ranked[0, :3].tolist()
        assert tokens[1] == ranked[1, 0]
        assert tokens[2] == ranked[2, 0]
        assert tokens[3] == ranked[3, 0]


def test_logprobs_are_the_raw_distribution_with_top_alternatives():
    torch.manual_seed(2)
    logits = torch.randn(2, 50)
    tokens, logprobs = sample(logits, [row(logprobs=3, temperature=0.0), row()], token_text)
    expected = logits[0].log_softmax(-1)
    assert logprobs[1] is None
    first = logprobs[0]
    assert first.token_id == tokens[0] and first.token == f"<{tokens[0]}>"
    assert abs(first.logprob - float(expected[tokens[0]])) < 1e-5
    assert [t.token_id for t in first.top] == expected.topk(3).indices.tolist()
