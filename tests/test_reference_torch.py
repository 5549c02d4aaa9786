"""The reference against PyTorch in float64: torch.nn.LSTM (with proj_size), GRU and RNN (tanh,
relu) with copied weights, one bidirectional layer (its reverse half is our reverse=True), full
and ragged batches (pack_padded_sequence): outputs, final states and every gradient."""

import dataclasses

import numpy as np
import pytest

from rnnfast import reference as ref

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# Our argument name -> PyTorch's parameter name (add "_reverse" for the reverse direction).
TORCH_NAMES = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
               "b_hh": "bias_hh_l0", "w_hr": "weight_hr_l0"}
SHAPES = [(5, 3, 4, 6), (1, 1, 3, 5), (7, 4, 2, 3)]  # (T, B, I, H)


def _torch_layer(case, I, H):
    """A bidirectional one-layer torch module of the case's cell, in float64."""
    options = {"input_size": I, "hidden_size": H, "bidirectional": True, "dtype": torch.float64}
    if case.cell == "lstm":
        proj_size = case.inputs["w_hr"].shape[0] if "w_hr" in case.inputs else 0
        return torch.nn.LSTM(proj_size=proj_size, **options)
    if case.cell == "gru":
        return torch.nn.GRU(**options)
    return torch.nn.RNN(nonlinearity=case.variant.options["nonlinearity"], **options)


def _run_torch(forward, backward, I, H):
    """Run torch on the two directions' cases; return its outputs and gradients, split by
    direction like the reference's (dx summed over the directions)."""
    layer = _torch_layer(forward, I, H)
    params = dict(layer.named_parameters())
    with torch.no_grad():
        for suffix, case in (("", forward), ("_reverse", backward)):
            for name, torch_name in TORCH_NAMES.items():
                if name in case.inputs:
                    params[torch_name + suffix].copy_(torch.from_numpy(case.inputs[name]))

    def stacked(name, source):
        return torch.from_numpy(np.stack([source(forward)[name], source(backward)[name]]))

    x = torch.from_numpy(forward.inputs["x"].copy()).requires_grad_()
    states = [stacked("h0", lambda c: c.inputs).requires_grad_()]
    if forward.cell == "lstm":
        states.append(stacked("c0", lambda c: c.inputs).requires_grad_())
    T = x.shape[0]
    sequence = x
    if forward.lengths is not None:
        sequence = pack_padded_sequence(x, torch.from_numpy(forward.lengths),
                                        enforce_sorted=False)
    y, final = layer(sequence, tuple(states) if forward.cell == "lstm" else states[0])
    if forward.lengths is not None:
        y, _ = pad_packed_sequence(y, total_length=T)
    final = final if forward.cell == "lstm" else (final,)

    loss = torch.sum(y * torch.from_numpy(np.concatenate(
        [forward.output_grads["dy"], backward.output_grads["dy"]], axis=-1)))
    for state, name in zip(final, ("dh_n", "dc_n")):
        loss = loss + torch.sum(state * stacked(name, lambda c: c.output_grads))
    loss.backward()

    P = y.shape[-1] // 2
    directions = []
    for d, suffix in enumerate(("", "_reverse")):
        outputs = {"y": y[..., d * P:(d + 1) * P], "h_n": final[0][d]}
        grads = {"dh0": states[0].grad[d]}
        if forward.cell == "lstm":
            outputs["c_n"] = final[1][d]
            grads["dc0"] = states[1].grad[d]
        for name, torch_name in TORCH_NAMES.items():
            if torch_name + suffix in params:
                grads[f"d{name}"] = params[torch_name + suffix].grad
        directions.append(({k: v.detach().numpy() for k, v in outputs.items()},
                           {k: v.numpy() for k, v in grads.items()}))
    return directions, x.grad.numpy()


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("variant_id", ["lstm", "lstm-projection", "gru", "rnn-tanh",
                                        "rnn-relu"])
def test_reference_matches_torch(variant_id, shape, ragged, make_case, assert_close):
    _, _, I, H = shape
    forward = make_case(variant_id, *shape, ragged=ragged, x_scale=2.0)
    backward = make_case(variant_id, *shape, reverse=True, ragged=ragged)
    backward = dataclasses.replace(backward, lengths=forward.lengths,
                                   inputs={**backward.inputs, "x": forward.inputs["x"]})
    torch_directions, torch_dx = _run_torch(forward, backward, I, H)

    dx = np.zeros_like(torch_dx)
    for case, (torch_outputs, torch_grads) in zip((forward, backward), torch_directions):
        direction = f"{variant_id} {'reverse' if case.reverse else 'forward'}"
        outputs, cache = case.forward(ref)
        grads = case.backward(ref, cache)
        assert outputs.keys() == torch_outputs.keys()
        for name, expected in torch_outputs.items():
            assert_close(outputs[name], expected, "float64", "forward", f"{direction} {name}")
        assert grads.keys() - {"dx"} == torch_grads.keys()
        for name, expected in torch_grads.items():
            assert_close(grads[name], expected, "float64", "backward", f"{direction} {name}")
        dx += grads["dx"]
    assert_close(dx, torch_dx, "float64", "backward", f"{variant_id} dx (both directions)")
