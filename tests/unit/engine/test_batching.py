from inferd.engine.batching import cut_batch


def ident(x):
    return x


def test_empty_pending_gives_nothing():
    assert cut_batch([], ident, 4, 100, 16) == ([], [])


def test_batch_groups_similar_lengths_and_includes_the_oldest():
    batch, rest = cut_batch([5, 1, 9, 5, 2, 30, 4], ident, 3, 100, 16)
    assert 5 in batch and len(batch) == 3
    assert sorted(batch) == [4, 5, 5]
    assert rest == [1, 9, 2, 30]  # arrival order kept


def test_the_oldest_long_input_is_never_starved():
    batch, _ = cut_batch([40] + [1] * 50, ident, 8, 10_000, 64)
    assert 40 in batch


def test_token_budget_caps_padded_size():
    batch, rest = cut_batch([10] * 10, ident, 8, 35, 64)
    assert len(batch) == 3  # 3 x 10 <= 35 < 4 x 10
    assert len(rest) == 7


def test_a_single_input_over_the_budget_still_goes_alone():
    batch, rest = cut_batch([500, 1], ident, 8, 100, 16)
    assert batch == [500] and rest == [1]


def test_max_batch_size_caps_count():
    batch, rest = cut_batch(list(range(1, 21)), ident, 5, 10_000, 100)
    assert len(batch) == 5 and len(rest) == 15


def test_items_outside_the_window_keep_waiting_in_order():
    batch, rest = cut_batch([3, 3, 1, 1, 1], ident, 2, 100, 2)
    assert batch == [3, 3] and rest == [1, 1, 1]


def test_cost_curve_interpolates_and_extends():
    from inferd.engine.batching import CostCurve

    curve = CostCurve([(16, 0.010), (256, 0.050), (1024, 0.150)])
    assert curve(8) == 0.010
    assert curve(136) == 0.030
    assert curve(1024) == 0.150
    assert curve(1792) > 0.150  # extended along the last segment


def test_with_a_cost_outliers_wait_for_their_own_batch():
    from inferd.engine.batching import CostCurve

    # fixed cost 10 ms + 0.1 ms per padded token: one 300-token input would make 9 short
    # inputs pay for 300 tokens each
    curve = CostCurve([(1, 0.0101), (10_000, 1.01)])
    batch, rest = cut_batch([10] * 9 + [300], ident, 16, 100_000, 64, cost=curve)
    assert batch == [10] * 9 and rest == [300]
    # without a cost the batch is as large as allowed
    batch, _ = cut_batch([10] * 9 + [300], ident, 16, 100_000, 64)
    assert len(batch) == 10


def test_with_a_cost_similar_inputs_still_share_a_pass():
    from inferd.engine.batching import CostCurve

    curve = CostCurve([(1, 0.0101), (10_000, 1.01)])
    batch, _ = cut_batch([20, 22, 19, 21, 20, 23], ident, 16, 100_000, 64, cost=curve)
    assert len(batch) == 6


def test_with_another_worker_idle_the_pending_inputs_split_into_two_passes_side_by_side():
    from inferd.engine.batching import CostCurve

    # one worker alone: 16 inputs in one pass beat two passes one after the other
    curve = CostCurve([(1, 0.0101), (10_000, 1.01)])
    batch, rest = cut_batch([16] * 16, ident, 32, 100_000, 64, cost=curve)
    assert len(batch) == 16 and not rest
    # another worker idle (lanes 2): the slower of two passes side by side is fastest when halved
    batch, rest = cut_batch([16] * 16, ident, 32, 100_000, 64, cost=curve, lanes=2)
    assert len(batch) == 8 and len(rest) == 8
    # one input cannot be split; the oldest still goes first
    assert cut_batch([16], ident, 32, 100_000, 64, cost=curve, lanes=2) == ([16], [])
    batch, rest = cut_batch([40] + [16] * 5, ident, 32, 100_000, 64, cost=curve, lanes=2)
    assert 40 in batch


def test_calibrate_times_growing_batches():
    from inferd.engine.batching import calibrate

    calls = []

    def run(count, length):
        calls.append((count, length))
        return 0.01 + 0.0001 * count * length

    curve = calibrate(run, max_tokens=1024, probe_length=16, repeats=1)
    assert [tokens for tokens, _ in curve.points] == [16, 64, 256, 512, 1024]
    assert curve(512) == 0.01 + 0.0001 * 512
