"""Build the "models from the wild" corpus of issue 14 into a cache folder.

    python tools/corpus_models.py [--out /tmp/onnxprune-corpus] [--models a,b,...] [--force]

Writes, per model, ``NAME.onnx`` and ``NAME_calib.npy`` (32 seeded random float32 samples of the
model's input at batch 1) and a ``manifest.json`` listing every model: its file, calibration file,
input name, the concrete input shape used (symbolic dims resolved and recorded), where it comes
from and its opset / IR version. A model whose build fails is skipped with the reason printed
(and recorded in the manifest's ``skipped``); the others are still built.

Two families:

* ``zoo_*``: the ONNX model-zoo graphs shipped weight-free with the ``onnx`` package
  (``onnx/backend/test/data/light/*.onnx``; IR 3, opset 9, static batch 1, initializers also
  listed as graph inputs). The light format replaces every large initializer ``X`` by
  ``ConstantOfShape(X__SHAPE)`` (``onnx.tools.replace_constants``); we undo exactly that: ``X``
  becomes an initializer again with seeded random values of the recorded shape and dtype, and the
  graph input ``X__SHAPE`` becomes the graph input ``X``. Nothing else is changed.
* ``tv_*`` and hand-written models: PyTorch exports at static batch 1 with
  ``torch.onnx.export(..., dynamo=False)`` and opsets 11..20, BN in eval mode, seeded random
  weights (BN statistics randomised too). torchvision is optional: without it the ``tv_*`` models
  are skipped. (The torchvision 0.28.0 wheel available here is a CUDA build whose C extension
  does not load against the CPU torch; ``corpus_torch.import_torchvision`` defines stub schemas for the two
  operators torchvision's import registers fake kernels for, which is enough for the model zoo.)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_torch import randomise, torch_models  # noqa: E402

DEFAULT_OUT = "/tmp/onnxprune-corpus"
CALIB_SAMPLES = 32


# --------------------------------------------------------------------------------------------
# ONNX model-zoo "light" models
# --------------------------------------------------------------------------------------------

def light_dir() -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _random_weight(shape: list[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if not np.issubdtype(dtype, np.floating):
        return np.zeros(shape, dtype)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) or 1
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    # 1-D: biases, BN scale/shift/mean/variance. Positive, so a variance is valid too.
    return rng.uniform(0.5, 1.0, size=shape).astype(dtype)


def materialise_light(path: str, seed: int = 0) -> onnx.ModelProto:
    """The light model with every ``ConstantOfShape(X__SHAPE) -> X`` replaced by a random initializer X."""
    model = onnx.load(path)
    g = model.graph
    rng = np.random.default_rng(seed)
    inits = {i.name: i for i in g.initializer}
    new_nodes, replaced = [], {}
    for node in g.node:
        if (node.op_type == "ConstantOfShape" and node.input and node.input[0].endswith("__SHAPE")
                and node.input[0] in inits):
            shape = [int(d) for d in numpy_helper.to_array(inits[node.input[0]])]
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            dtype = numpy_helper.to_array(value).dtype if value is not None else np.dtype(np.float32)
            arr = _random_weight(shape, dtype, rng)
            replaced[node.input[0]] = numpy_helper.from_array(arr, node.output[0])
            continue
        new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    kept = [i for i in g.initializer if i.name not in replaced]
    del g.initializer[:]
    g.initializer.extend(kept + list(replaced.values()))
    new_inputs = []
    for vi in g.input:
        if vi.name in replaced:
            t = replaced[vi.name]
            new_inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            new_inputs.append(vi)
    del g.input[:]
    g.input.extend(new_inputs)
    onnx.checker.check_model(model)
    return model


def build_light(out: Path, wanted, force: bool, manifest: dict) -> None:
    for path in sorted(glob.glob(os.path.join(light_dir(), "light_*.onnx"))):
        name = "zoo_" + os.path.basename(path)[len("light_"):-len(".onnx")]
        if wanted and name not in wanted:
            continue
        t0 = time.time()
        try:
            dst = out / f"{name}.onnx"
            model = materialise_light(path) if force or not dst.exists() else onnx.load(dst)
            if force or not dst.exists():
                onnx.save(model, dst)
            inits = {i.name for i in model.graph.initializer}
            real = [i for i in model.graph.input if i.name not in inits]
            assert len(real) == 1, [i.name for i in real]
            shape = [d.dim_value for d in real[0].type.tensor_type.shape.dim]
            _entry(manifest, out, name, model, real[0].name, shape, {},
                   f"onnx {onnx.__version__} backend/test/data/light, random weights (seed 0)", t0)
        except Exception as e:  # noqa: BLE001
            _skip(manifest, name, e)


# --------------------------------------------------------------------------------------------
# PyTorch models
# --------------------------------------------------------------------------------------------

def initializers_to_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """paddle2onnx style: every initializer becomes a Constant node at the top of the graph."""
    g = model.graph
    consts = [helper.make_node("Constant", [], [i.name], name=f"const_{i.name}", value=i) for i in g.initializer]
    names = {i.name for i in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in names]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    del g.input[:]
    g.input.extend(inputs)
    return model


def build_torch(out: Path, wanted, force: bool, manifest: dict) -> None:
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(f"skip all torch models: torch unavailable ({e})", flush=True)
        return
    torch.set_num_threads(2)
    for i, (name, (factory, shape, dyn, opset, note)) in enumerate(torch_models().items()):
        if wanted and name not in wanted:
            continue
        t0 = time.time()
        dst = out / f"{name}.onnx"
        try:
            if force or not dst.exists():
                torch.manual_seed(1000 + i)
                model = randomise(factory(), 1000 + i)
                x = torch.randn(*shape)
                tmp = out / f"{name}.tmp.onnx"
                with torch.no_grad():
                    torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset,
                                      input_names=["input"], output_names=["output"],
                                      dynamic_axes={"input": dyn} if dyn else None, do_constant_folding=True)
                m = onnx.load(str(tmp))
                tmp.unlink()
                if name == "const_weights":
                    m = initializers_to_constants(m)
                onnx.checker.check_model(m)
                onnx.save(m, str(dst))
            m = onnx.load(str(dst))
            _entry(manifest, out, name, m, "input", list(shape), {str(k): v for k, v in dyn.items()},
                   note + f", random weights (seed {1000 + i})", t0)
        except Exception as e:  # noqa: BLE001
            _skip(manifest, name, e)


# --------------------------------------------------------------------------------------------

def _entry(manifest, out: Path, name, model, input_name, shape, symbolic, source, t0):
    calib = out / f"{name}_calib.npy"
    if not calib.exists():
        rng = np.random.default_rng(sum(map(ord, name)))  # seeded per model, stable across runs
        np.save(calib, rng.standard_normal((CALIB_SAMPLES, *shape[1:])).astype(np.float32))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    manifest["models"][name] = {
        "model": str(out / f"{name}.onnx"), "calib": str(calib), "input": input_name,
        "shape": [int(s) for s in shape], "symbolic": symbolic, "source": source,
        "opset": opset, "ir_version": model.ir_version,
    }
    print(f"built {name:<24} opset {opset} IR {model.ir_version} input {input_name} {list(shape)}"
          f"{' symbolic ' + str(symbolic) if symbolic else ''} ({time.time() - t0:.1f}s)", flush=True)


def _skip(manifest, name, e: Exception):
    reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    manifest["skipped"][name] = reason
    print(f"SKIP  {name}: {reason}", flush=True)
    if os.environ.get("CORPUS_DEBUG"):
        traceback.print_exc()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--models", default="", help="comma-separated names (default: all)")
    ap.add_argument("--force", action="store_true", help="rebuild models already in the cache")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {m for m in args.models.split(",") if m}
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest.setdefault("models", {})
    manifest["skipped"] = {k: v for k, v in manifest.get("skipped", {}).items() if wanted and k not in wanted}
    build_light(out, wanted, args.force, manifest)
    build_torch(out, wanted, args.force, manifest)
    mpath.write_text(json.dumps(manifest, indent=2))
    print(f"{len(manifest['models'])} models, {len(manifest['skipped'])} skipped -> {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
