"""Cost measurement: FLOPs against closed forms, the element-wise counter, memory and timing."""
import statistics

import pytest
import torch
from torch import nn

from attnlab.measure import cost
from attnlab.measure.cost import (PeakMemoryTracker, count_elementwise, count_flops, count_params,
                                  inference_latency, inference_timings, measure_costs, peak_memory,
                                  peak_memory_bytes, train_step_time, train_step_timings)


def test_conv_flops_closed_form():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    # one output element = Cin * k * k multiply-accumulates; outputs = Cout * H * W; 2 FLOPs per MAC
    expected = 2 * (3 * 3 * 3) * (16 * 10 * 12)
    got = count_flops(conv, (3, 10, 12))
    assert got["flops"] == expected and got["macs"] == expected // 2
    # batch 4 is four times as much
    assert count_flops(conv, (4, 3, 10, 12))["flops"] == 4 * expected
    assert count_params(conv) == 16 * 3 * 9


def test_strided_conv_and_linear_closed_form():
    model = nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    # conv: output 4 x 4 x 4 = 64 positions, each 8 * 9 MACs; linear: 64 * 5 MACs (bias not counted)
    assert count_flops(model, (8, 8, 8))["flops"] == 2 * (64 * 8 * 9 + 64 * 5)


def test_se_block_flops_and_elementwise_closed_form():
    from attnlab.attention import SqueezeExcite

    channels, reduction, h, w = 64, 16, 6, 5
    se = SqueezeExcite(channels, reduction=reduction)
    hidden = channels // reduction  # the paper's C / r = 4
    # excitation: two fully connected layers C -> C/r -> C, one sample
    assert count_flops(se, (channels, h, w))["flops"] == 2 * (channels * hidden + hidden * channels)
    ew = count_elementwise(se, (channels, h, w), by_op=True)
    # squeeze = global average pool: one op per input element
    assert ew["pooling_ops"] == channels * h * w
    # scale: one multiply per element; sigmoid on C values; ReLU on C/r values (plus biases)
    assert ew["by_op"]["mul"] >= channels * h * w
    assert ew["elementwise_ops"] >= channels * h * w + channels + hidden


def test_attention_products_are_counted():
    class Affinity(nn.Module):
        def forward(self, x):  # (N, C, H, W) -> softmax(x^T x) x^T : two batched products
            f = x.flatten(2)
            a = torch.softmax(f.transpose(1, 2) @ f, dim=-1)
            return (f @ a).view_as(x)

    c, n = 4, 3 * 5
    got = count_flops(Affinity(), (c, 3, 5))
    assert got["flops"] == 2 * (n * c * n + c * n * n)
    assert count_elementwise(Affinity(), (c, 3, 5), by_op=True)["by_op"]["_softmax"] == 5 * n * n


def test_peak_memory_tracker_follows_frees():
    with PeakMemoryTracker() as mem:
        a = torch.empty(1000)        # 4000 bytes live
        b = torch.empty(250)         # 5000 bytes live: the peak
        del a
        c = torch.empty(500)         # 1000 + 2000 bytes live
    assert mem.peak_bytes == 5000
    assert mem.live_bytes == 3000
    del b, c


def test_peak_memory_training_exceeds_inference_and_state():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    before = [p.detach().clone() for p in model.parameters()]
    train = peak_memory(model, (1, 12, 12), batch_size=16, training=True)
    infer = peak_memory(model, (1, 12, 12), batch_size=16, training=False)
    # the conv output alone is 16 * 8 * 12 * 12 floats; training keeps it (and the ReLU's) for backward
    act = 16 * 8 * 12 * 12 * 4
    assert train["transient_bytes"] >= 2 * act
    assert infer["transient_bytes"] >= act
    assert train["peak_bytes"] > infer["peak_bytes"] > infer["state_bytes"] > 0
    # the caller's model is untouched
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_timings_and_measure_costs():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    assert inference_latency(model, (1, 8, 8), batch_size=2, repeats=3, warmup=1) > 0
    assert train_step_time(model, (1, 8, 8), batch_size=4, repeats=2, warmup=1) > 0
    costs = measure_costs(model, (1, 8, 8), large_batch=8, train_batch=4, repeats=2, warmup=1)
    for key in ("params", "flops", "macs", "pooling_ops", "elementwise_ops", "latency_b1_s",
                "latency_large_s", "train_step_s", "peak_train_bytes", "peak_infer_bytes"):
        assert key in costs
    assert costs["params"] == 4 * 9 + 4 + 144 * 2 + 2
    assert model.training  # the mode flag is restored


def test_timings_are_each_call_and_the_latency_their_median(monkeypatch):
    # A clock read twice per timed call (before, after), the calls lasting 5, 1, 4, 2, 3 ms
    durations = [0.005, 0.001, 0.004, 0.002, 0.003]
    reads = iter([t for i, d in enumerate(durations) for t in (float(i), i + d)] * 2)
    monkeypatch.setattr(cost.time, "perf_counter", lambda: next(reads))
    model = nn.Conv2d(1, 1, 1)
    assert inference_timings(model, (1, 2, 2), repeats=5, warmup=0) == pytest.approx(durations)
    assert inference_latency(model, (1, 2, 2), repeats=5, warmup=0) == pytest.approx(0.003)  # median by hand


def test_measure_costs_keeps_every_repeat():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    repeats = 3
    costs = measure_costs(model, (1, 8, 8), large_batch=4, train_batch=4, repeats=repeats, warmup=0)
    # batch 1 gets twice the repeats (a short call), the others `repeats`
    for name, n in (("latency_b1", 2 * repeats), ("latency_large", repeats), ("train_step", repeats)):
        runs = costs[f"{name}_runs"]
        assert len(runs) == n and all(isinstance(t, float) and t > 0 for t in runs)
        assert costs[f"{name}_s"] == statistics.median(runs)
    assert len(inference_timings(model, (1, 8, 8), batch_size=2, repeats=4, warmup=0)) == 4
    assert len(train_step_timings(model, (1, 8, 8), batch_size=2, repeats=2, warmup=0)) == 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(nn.Identity(), (3, 0, 4))
    with pytest.raises(TypeError, match="nn.Module"):
        count_params("resnet")
    with pytest.raises(ValueError, match="repeats"):
        inference_latency(nn.Conv2d(1, 1, 1), (1, 2, 2), repeats=0)


def test_measure_costs_restores_the_thread_count():
    before = torch.get_num_threads()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    costs = measure_costs(model, (1, 6, 6), large_batch=2, train_batch=2, repeats=1, warmup=0, threads=1)
    assert costs["threads"] == 1 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        inference_latency(nn.Conv2d(1, 1, 1), (1, 2, 2), threads=0)


def test_measure_costs_times_a_channels_last_copy_when_asked():
    # A 1x1 stem first: its weight looks the same in both layouts, so the next conv decides.
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    seen = []
    model[0].register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
    plain = measure_costs(model, (2, 6, 6), large_batch=2, train_batch=2, repeats=1, warmup=0)
    assert plain["memory_format"] == "contiguous" and not any(seen)
    seen.clear()
    cl = measure_costs(model, (2, 6, 6), large_batch=2, train_batch=2, repeats=1, warmup=0, channels_last=True)
    assert cl["memory_format"] == "channels_last" and seen and all(seen)   # every timed input is channels_last
    assert model[1].weight.is_contiguous()                                  # the caller's model is untouched
    assert cl["params"] == plain["params"] and cl["flops"] == plain["flops"]


def test_peak_memory_sees_temporaries():
    x = torch.zeros(1000)  # 4000 bytes live before the call

    def make_temporaries():
        a = torch.ones(250_000)   # 1 MB
        b = a * 2                 # another 1 MB while a is alive
        return float(b[0])

    peak = peak_memory_bytes(make_temporaries, "cpu", [x])
    assert 2_000_000 + 4000 <= peak < 3_000_000
