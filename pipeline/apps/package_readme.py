"""The README texts of the Triton and DeepStream packages (``pipeline.apps.package``) and the file names they cite."""
from __future__ import annotations

from pipeline.core.caveats import random_weights_caveat
from pipeline.core.variants import FOREIGN, ImageSize
from pipeline.store.manifest import Manifest

__all__ = ["triton_readme", "deepstream_readme", "PLAN_NAME", "LABELS_NAME", "README_NAME", "CONTAINER_REPO",
           "DEEPSTREAM_NETWORK_MODE", "DEEPSTREAM_SCALE"]

PLAN_NAME = "model.plan"
LABELS_NAME = "labels.txt"
README_NAME = "README.md"
#: Where the model repository is mounted inside the Triton container (the README's commands use it).
CONTAINER_REPO = "/models"
#: Gst-nvinfer network-mode per manifest precision.
DEEPSTREAM_NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
#: nvinfer net-scale-factor per input format it can express (offsets are 0 for both: the graph subtracts the mean).
DEEPSTREAM_SCALE = {"rgb-float01": 1.0 / 255.0}


def _flavour_note(manifest: Manifest) -> str:
    if manifest.backend_flavour == "TensorRT":
        return ""
    return (f"\n**Note:** this engine was built by {manifest.backend_label}. Triton's `tensorrt` backend and "
            "DeepStream's nvinfer run engines of full TensorRT; rebuild the engine directory with full TensorRT "
            "(of the version the server ships) on the target GPU before serving it.\n")


def _weights_note(manifest: Manifest) -> str:
    caveat = random_weights_caveat(manifest.weights)
    return f"\n**{caveat}**\n" if caveat else ""


def triton_readme(manifest: Manifest, name: str, input_format: str, repo_hint: str) -> str:
    plugin = f"{CONTAINER_REPO}/{name}/{manifest.plugin.file}" if manifest.plugin else None
    backend_config = f" \\\n      --backend-config=tensorrt,plugins={plugin}" if plugin else ""
    model = ("a model of your own with SG-Former inside" if manifest.variant == FOREIGN
             else f"SG-Former {manifest.variant}")
    return f"""# {name}: {model} ({manifest.precision}, {_size(manifest)} px) for Triton

Made by `sgformer-trt package --triton` from an engine directory (manifest: {manifest.backend_label},
batch {manifest.batch.min}..{manifest.batch.max}). Layout:

    {name}/config.pbtxt        platform tensorrt_plan, max_batch_size {manifest.batch.max}, dynamic batching, 1 GPU instance
    {name}/1/{PLAN_NAME}       the engine
    {name}/{manifest.plugin.file if manifest.plugin else "(no plugin)"}   the SGFormerIAM plugin library it was built with
    {_labels_line(manifest, name)}
{_flavour_note(manifest)}{_weights_note(manifest)}
Serve with NVIDIA's Triton container, the repository mounted at {CONTAINER_REPO} (paths below are inside the
container; the plugin library registers itself when the tensorrt backend dlopens it):

    docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -v {repo_hint}:{CONTAINER_REPO} \\
      nvcr.io/nvidia/tritonserver:<release>-py3 \\
      tritonserver --model-repository={CONTAINER_REPO}{backend_config}

(`{repo_hint}` is where this repository was written; change it to its path on the serving machine. Use a
Triton release whose TensorRT matches the engine's, {manifest.backend_label}.)

{_inputs_sentence(manifest, input_format)} {_outputs_sentence(manifest)}

Not run here: this package was generated and its config.pbtxt parsed with Triton's ModelConfig protobuf;
no tritonserver was started (no GPU on the machine that made it).
"""


def _size(manifest: Manifest) -> str:
    return str(ImageSize.parse(manifest.img_size))


def _tensor(t) -> str:
    """`` `name` dtype `[N, dims]` `` of a manifest tensor (the batch axis as N)."""
    return f"`{t.name}` {t.dtype} `[N, {', '.join(str(d) for d in t.shape[1:])}]`"


def _labels_line(manifest: Manifest, name: str) -> str:
    if manifest.variant == FOREIGN:
        return f"(no {LABELS_NAME}: the outputs are your model's own)"
    if manifest.task == "features":
        return f"(no {LABELS_NAME}: a backbone's outputs are feature maps, not classes)"
    return f"{name}/{LABELS_NAME}        class names of output `{manifest.outputs[0].name}` (classification extension)"


def _outputs_sentence(manifest: Manifest) -> str:
    if manifest.variant == FOREIGN:
        listed = "; ".join(_tensor(t) for t in manifest.outputs)
        return f"Outputs (your model's, as its graph names them; decoding them is your client's work): {listed}."
    if manifest.task != "features":
        return f"Output `{manifest.outputs[0].name}`: logits (no softmax)."
    maps = "; ".join(f"{_tensor(t)} (stride {t.stride})" for t in manifest.outputs)
    return f"Outputs (a backbone: NCHW maps after each stage's LayerNorm, for a detector's or segmenter's neck): {maps}."


def _inputs_sentence(manifest: Manifest, input_format: str) -> str:
    if manifest.variant == FOREIGN:  # the graph's own preprocessing contract: not ours to state
        listed = "; ".join(_tensor(t) for t in manifest.inputs)
        return f"Inputs (your model's, preprocessed as your own export expects): {listed}."
    t = manifest.inputs[0]
    return (f"Input `{t.name}`: {t.dtype} `[N, {', '.join(str(d) for d in t.shape[1:])}]`, input format "
            f"`{input_format}` ({_format_sentence(input_format)}).")


def _format_sentence(input_format: str) -> str:
    return {
        "normalized": "RGB after resize + center crop, /255, minus ImageNet mean, divided by ImageNet std",
        "rgb-float01": "RGB after resize + center crop, scaled to [0, 1]; the graph normalizes",
        "rgb-uint8": "RGB uint8 pixels after resize + center crop; the graph scales and normalizes",
    }[input_format]


def deepstream_readme(manifest: Manifest, config_name: str, input_format: str) -> str:
    t = manifest.inputs[0]
    return f"""# SG-Former {manifest.variant} ({manifest.precision}, {_size(manifest)} px) for DeepStream (Gst-nvinfer)

Made by `sgformer-trt package --deepstream` from an engine directory ({manifest.backend_label}, batch
{manifest.batch.min}..{manifest.batch.max}, input format `{input_format}`).
{_weights_note(manifest)}
Files:

    {config_name}   nvinfer [property] group: classifier, batch-size {manifest.batch.max}, network-mode {DEEPSTREAM_NETWORK_MODE[manifest.precision]} ({manifest.precision})
    {manifest.engine.file}   the engine (model-engine-file)
    {manifest.plugin.file if manifest.plugin else "(no plugin)"}   SGFormerIAM plugin (custom-lib-path; it registers itself when nvinfer dlopens it)
    {LABELS_NAME}   the 1000 class names, one `;`-separated line (nvinfer's classifier label format)
{_flavour_note(manifest)}
nvinfer scales frames to {t.shape[3]}x{t.shape[2]} RGB (no center crop: the PyTorch preprocessing crops) and feeds
`{DEEPSTREAM_SCALE[input_format]!r} * pixel`; the graph subtracts the ImageNet mean and divides by the std.
Output `{manifest.outputs[0].name}` is logits (no softmax): classifier-threshold=0 keeps the top class when its
logit is positive; raise it or parse the tensor (output-tensor-meta=1) for probabilities.

Minimal pipeline (run in this folder; relative paths in the config are relative to it):

    gst-launch-1.0 filesrc location=/opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.h264 ! \\
        h264parse ! nvv4l2decoder ! m.sink_0 nvstreammux name=m batch-size=1 width=1280 height=720 ! \\
        nvinfer config-file-path={config_name} ! nvvideoconvert ! nvdsosd ! fakesink

Not run here: the package was generated and the config parsed back in the tests; no DeepStream was started
(no GPU on the machine that made it).
"""
