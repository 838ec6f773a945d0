"""Model shapes, the registry, and one optimisation step lowering the loss."""

from __future__ import annotations

import pytest
import torch

from ser.errors import SerError
from ser.training.models import CNN1D, CNN2D, build_model, parse_kernels, resolve_hparams


@pytest.mark.parametrize("length, flat", [(195, 128 * 7), (193, 128 * 7), (162, 128 * 6), (40, 128 * 2)])
def test_cnn1d_flat_size_follows_input_length(length: int, flat: int) -> None:
    model = CNN1D(length, 6)
    assert model.flat_size == flat
    assert model(torch.randn(4, length)).shape == (4, 6)


@pytest.mark.parametrize("shape", [(64, 251), (32, 94), (8, 12)])
@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_cnn2d_shapes(shape: tuple[int, int], pooling: str) -> None:
    model = CNN2D(shape, 5, filters=[8, 8, 16, 16, 8], kernels=parse_kernels("1x3,3x5,3x5,3x3,3x3"),
                  pooling=pooling)
    assert model(torch.randn(3, *shape)).shape == (3, 5)


def test_cnn1d_is_the_study_network_layer_for_layer() -> None:
    model = CNN1D(195, 6)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (1, 512, 5, 2), (512, 512, 5, 2), (512, 256, 5, 2), (256, 256, 3, 1), (256, 128, 3, 1)]
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool1d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(5, 2, 2)] * 4 + [(3, 2, 1)]
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(896, 512), (512, 6)]


def test_cnn1d_width_scales_every_layer_and_defaults_to_the_study() -> None:
    narrow = CNN1D(195, 6, width=0.125)
    convs = [m for m in narrow.features if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [64, 64, 32, 32, 16]
    assert [l.out_features for l in narrow.head if isinstance(l, torch.nn.Linear)] == [64, 6]
    assert narrow(torch.randn(3, 195)).shape == (3, 6)
    assert resolve_hparams("cnn1d", {"width": "0.25"})["width"] == 0.25
    assert resolve_hparams("cnn1d")["width"] == 1.0
    with pytest.raises(SerError, match="width"):
        CNN1D(195, 6, width=0)


def test_kernels_and_filters_are_validated() -> None:
    assert parse_kernels("1x3,3x5") == [(1, 3), (3, 5)]
    with pytest.raises(SerError, match="HxW"):
        parse_kernels("3by3")
    with pytest.raises(SerError, match="kernels"):
        CNN2D((16, 16), 3, filters=[8, 8], kernels=[(3, 3)])
    with pytest.raises(SerError, match="no hyper-parameter"):
        resolve_hparams("cnn1d", {"filters": "8,8"})


@pytest.mark.parametrize("name, shape", [("cnn1d", (60,)), ("cnn2d", (16, 20))])
def test_one_step_lowers_the_loss_on_a_fixed_batch(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, *shape)
    y = torch.arange(16) % 3
    stat_shape = (shape[0],) if name == "cnn1d" else (shape[0], 1)
    model = build_model(name, input_shape=shape, n_classes=3, hparams=resolve_hparams(name, {"dropout": 0.0}),
                        mean=torch.zeros(stat_shape), std=torch.ones(stat_shape))
    model.train()  # no dropout: with the same batch, BatchNorm's batch statistics make this deterministic
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def loss_now() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(x), y)

    before = loss_now()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_now()
    assert float(after) < float(before.detach())


def test_stats_pooling_is_each_channel_and_bands_mean_and_std_over_time() -> None:
    from ser.training.models import StatsPool

    x = torch.randn(2, 3, 4, 10)
    out = StatsPool()(x)
    assert out.shape == (2, 2 * 3 * 4)
    torch.testing.assert_close(out[1, :12].reshape(3, 4), x[1].mean(dim=2))
    torch.testing.assert_close(out[0, 12:].reshape(3, 4), x[0].std(dim=2, unbiased=False))


@pytest.mark.parametrize("time_pool", [1, 3])
def test_cnn2d_with_stats_pooling_and_time_pooling(time_pool: int) -> None:
    model = CNN2D((16, 40), 4, filters=[4, 8], kernels=[(3, 3), (3, 3)], pooling="stats", time_pool=time_pool)
    assert model.head[-1].in_features == 2 * 8 * 4  # 8 channels x 4 bands (16 / 2 / 2), mean and std
    assert model(torch.randn(5, 16, 40)).shape == (5, 4)
    with pytest.raises(SerError, match="time_pool"):
        CNN2D((16, 40), 4, filters=[4], kernels=[(3, 3)], time_pool=41)


def test_attentive_stats_pooling_is_a_weighted_mean_and_std_over_time() -> None:
    from ser.training.models import AttentiveStatsPool

    pool = AttentiveStatsPool(3, hidden=4)
    h = torch.randn(2, 3, 7)
    w = torch.softmax(pool.attention(h), dim=2)                      # (2, 1, 7), each row sums to 1
    torch.testing.assert_close(w.sum(dim=2), torch.ones(2, 1))
    mean = (w * h).sum(dim=2)
    std = (w * (h - mean[:, :, None]) ** 2).sum(dim=2).sqrt()
    out = pool(h)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out[:, :3], mean)
    torch.testing.assert_close(out[:, 3:], std, rtol=1e-4, atol=1e-4)
    # uniform attention (a zero last layer) is plain statistics pooling
    torch.nn.init.zeros_(pool.attention[2].weight)
    torch.testing.assert_close(pool(h)[:, :3], h.mean(dim=2))


@pytest.mark.parametrize("shape, time_pool", [((64, 251), 2), ((16, 12), 1), ((8, 5), 5)])
def test_tdnn_reads_bands_as_channels_at_any_length(shape: tuple[int, int], time_pool: int) -> None:
    from ser.training.models import TDNN

    model = TDNN(shape, 6, channels=8, time_pool=time_pool)
    first = model.features[0]
    assert (first.in_channels, first.out_channels, first.kernel_size[0]) == (shape[0], 8, 5)
    assert [m.dilation[0] for m in model.features if isinstance(m, torch.nn.Conv1d)] == [1, 2, 3, 1]
    assert model(torch.randn(3, *shape)).shape == (3, 6)
    assert resolve_hparams("tdnn", {"channels": "32"}) == {"channels": 32, "time_pool": 2, "dropout": 0.3}
    with pytest.raises(SerError, match="time_pool"):
        TDNN(shape, 6, time_pool=shape[1] + 1)
