"""The engine runs format-3 DAGs: hand-built residual graphs against torch computing the same
thing, the fused and unfused plans, trace, format-2 files, and use without torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from binarynet import engine
from binarynet.engine import backends, float_ops, plan, reference
from dag_fixtures import residual_net
from engine_fixtures import run_without_torch


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def channels(v):
    """A per-channel vector broadcast over NCHW."""
    return t(v).view(1, -1, 1, 1)


def torch_sign(x, thresh, flip):
    """+-1 of x >= thresh (x <= thresh where flip), per channel of NCHW."""
    up = torch.where(channels(flip), x <= channels(thresh), x >= channels(thresh))
    return torch.where(up, 1.0, -1.0)


def torch_prelu(x, params):
    shift_in, slope, shift_out = params
    z = x + channels(shift_in)
    return torch.where(z > 0, z, channels(slope) * z) + channels(shift_out)


def torch_bconv(bits, w_pm1, scale, shift, **kw):
    s = F.conv2d(bits, t(w_pm1).permute(0, 3, 1, 2), **kw)  # exact small integers
    return s * channels(scale) + channels(shift)


def residual_net_torch(p, x):
    """What residual_net computes, in torch NCHW float32."""
    y = F.conv2d(x, t(p["stem.w"]).permute(0, 3, 1, 2), t(p["stem.b"]), padding=1)
    y = torch_prelu(y * channels(p["bn0.s"]) + channels(p["bn0.h"]), p["act0"])
    b = torch_bconv(torch_sign(y, p["s1.t"], p["s1.f"]), p["b1.w"], p["b1.s"], p["b1.h"],
                    padding=1)
    y1 = torch_prelu(b * channels(p["bn1.s"]) + channels(p["bn1.h"]) + y, p["act1"])
    b = torch_bconv(torch_sign(y1, p["s2.t"], p["s2.f"]), p["b2.w"], p["b2.s"], p["b2.h"],
                    stride=2, padding=1)
    y2 = torch.relu(F.avg_pool2d(y1, 2, 2) + b)
    y = torch.cat([y2, F.max_pool2d(y1, 3, 2, 1)], 1)
    y = F.conv2d(y, t(p["proj.w"]).permute(0, 3, 1, 2), t(p["proj.b"]))
    y = F.adaptive_avg_pool2d(y, 1).flatten(1)
    return F.linear(y, t(p["fc.w"]), t(p["fc.b"]))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_residual_dag_with_every_new_op_equals_torch(seed):
    g, p = residual_net(seed)
    x = np.random.default_rng(seed + 10).standard_normal((6, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = residual_net_torch(p, t(x)).numpy()
    model = g.model()
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(g.model(reference=True).predict(x), model.predict(x))
