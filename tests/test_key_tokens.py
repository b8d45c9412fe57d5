"""The LongPPL-style key-token loss (workers.key_tokens) on a constructed reader whose key
tokens are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.key_tokens import default_short_len, key_tokens

V = 200  # text ids 0..199; DOC is above them
DOC_ID = 250
CONFIDENCE = 10.0  # the reader's logit on the token it copies


class LagReader(torch.nn.Module):
    """Predicts that the next token repeats the one ``lag`` tokens before it (logit
    CONFIDENCE) when its input reaches that far back; else every token alike. Such a reader
    needs more than ``lag`` tokens of context, so with a short context it knows nothing."""

    def __init__(self, lag: int) -> None:
        super().__init__()
        self.lag = lag

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        logits = torch.zeros(B, T, 256)
        for t in range(T):
            source = t + 1 - self.lag  # input position of the token lag before the next one
            if source >= 1:  # position 0 is the separator
                logits[torch.arange(B), t, idx[:, source]] = CONFIDENCE
        return logits


def _text(windows: int, seq_len: int, lag: int, per_window: int, seed: int = 0):
    """Random text of ``windows`` back-to-back windows; in each, ``per_window`` positions
    past ``lag`` repeat the token ``lag`` before them (the key tokens), no other does."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=windows * seq_len)
    planted = np.zeros((windows, seq_len - 1), dtype=bool)
    for w in range(windows):
        base = w * seq_len
        # 1-based text positions p in (lag, seq_len]; window target p - 2.
        chosen = rng.choice(np.arange(lag + 1, seq_len + 1), size=per_window, replace=False)
        for p in range(2, seq_len + 1):
            i = base + p - 1
            if p in chosen:
                tokens[i] = tokens[i - lag]
                planted[w, p - 2] = True
            elif p > lag:
                while tokens[i] == tokens[i - lag]:
                    tokens[i] = rng.integers(0, V)
    return tokens, planted


def test_key_tokens_are_the_ones_that_need_the_long_context():
    seq_len, lag, windows = 64, 16, 6
    short = default_short_len(seq_len)
    assert short == 8 and lag > short  # the short context never reaches back lag tokens
    eligible = seq_len - short  # targets past the first short_len positions, per window
    per_window = 7
    tokens, planted = _text(windows, seq_len, lag, per_window)
    got = key_tokens(
        LagReader(lag),
        tokens,
        seq_len,
        fraction=per_window / eligible,
        n_windows=windows,
        batch_size=4,
        doc=DOC_ID,
    )
    np.testing.assert_array_equal(got.starts, np.arange(windows) * seq_len)
    np.testing.assert_array_equal(got.mask, planted)
    # On them the reader is right with probability e^C / (e^C + 255) (256 logits).
    nats = -math.log(math.exp(CONFIDENCE) / (math.exp(CONFIDENCE) + 255))
    assert got.bpb == pytest.approx(nats / math.log(2), rel=1e-3)  # fp32 logits
    # Each key token gained log(256) - that; the first short_len positions are not eligible.
    assert np.isnan(got.lsd[:, : short - 1]).all() and not np.isnan(got.lsd[:, short - 1 :]).any()
    assert got.lsd[got.mask] == pytest.approx(math.log(256) - nats, rel=1e-4)


def test_key_tokens_of_a_reader_without_long_context_score_its_plain_loss():
    # A reader that sees no further back than the short context: no token gains, and the
    # key tokens' loss is its loss anywhere (uniform: 8 bits per token).
    seq_len, windows = 48, 3
    tokens, _ = _text(windows, seq_len, lag=16, per_window=4)
    got = key_tokens(LagReader(10**6), tokens, seq_len, n_windows=windows, doc=DOC_ID)
    assert np.nanmax(np.abs(got.lsd)) < 1e-9
    assert got.bpb == pytest.approx(8.0)
    assert got.mask.sum() == round(0.1 * windows * (seq_len - default_short_len(seq_len)))


def test_key_tokens_cover_a_window_not_a_multiple_of_the_block():
    seq_len, lag, windows = 60, 16, 2
    tokens, planted = _text(windows, seq_len, lag, per_window=5)
    got = key_tokens(
        LagReader(lag),
        tokens,
        seq_len,
        short_len=8,  # blocks of 4 targets
        fraction=5 / (seq_len - 8),
        n_windows=windows,
        doc=DOC_ID,
    )
    np.testing.assert_array_equal(got.mask, planted)
    # 58 positions: the last block holds positions 57 and 58 only, and is still scored.
    odd = key_tokens(LagReader(lag), tokens[:59], 58, short_len=8, n_windows=1, doc=DOC_ID)
    assert np.isnan(odd.lsd[0, :7]).all() and not np.isnan(odd.lsd[0, 7:]).any()
    with pytest.raises(ValueError, match="even"):
        key_tokens(LagReader(lag), tokens, seq_len, short_len=7, doc=DOC_ID)


def test_key_token_bpb_is_an_objective_with_its_fraction_in_the_score_section():
    from space.errors import ConfigError
    from space.schema import parse_config

    base = {
        "study": {
            "name": "t",
            "trials": 1,
            "objectives": [{"metric": "key_token_bpb", "direction": "minimize"}],
        },
        "space": {"global_every": {"choice": [1, 4]}},
        "model": {"layers": 4, "d_model": 32, "heads": 2, "mlp_hidden": 64},
        "train": {"seq_len": 64, "batch_size": 2, "steps": 10},
        "score": {"key_token_fraction": 0.25},
    }
    assert parse_config(base).score.key_token_fraction == 0.25
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "score": {"key_token_fraction": 0.0}})
    assert "score.key_token_fraction" in dict(info.value.problems)
