"""aidetect_utils: the shared code behind the real-or-AI image detection notebooks.

One concept per module (this is the package's module map; README points here):

Data
- ``paths``       the project root, and where ``data/`` and ``results/`` live (``AIDETECT_HOME``:
                  a Drive folder in Colab)
- ``images``      any image file -> RGB uint8, or a one-line error
- ``data``        CIFAKE and folder-per-class sources, the download, the decoded cache
- ``splits``      content deduplication, stratified train/val/test splits, prepared data
- ``sidset``      SID_Set streamed from the Hugging Face hub (label 2 "tampered" removed, the
                  first N per class, balanced)
- ``transforms``  torch datasets over the cache, torchvision preprocessing and augmentation

Models
- ``models``      model builders (EfficientNet, ViT, frozen backbone + head), offline Lite0
                  weights, the rebuild of a saved model from its spec
- ``registry``    builder names -> modules, so ``artifacts`` never imports a model module
- ``features``    a frozen backbone's features extracted once and cached; gradient importance
- ``uncertainty`` Monte Carlo dropout, accuracy against coverage
- ``losses``      answer-token losses of the vision-language model (cross-entropy, focal)
- ``vlm``         Qwen2.5-VL as a detector, a sub-package:
  - ``vlm.backends``  loading it, Unsloth on a CUDA GPU or transformers + peft; LoRA
  - ``vlm.tiny``      a small Qwen2.5-VL and its processor, built offline
  - ``vlm.prompt``    the question, the one-word answers, answer-token label masking
  - ``vlm.data``      the images the VLM notebooks use: CIFAKE subsets or SID_Set
  - ``vlm.training``  LoRA fine-tuning with ``Trainer`` on the answer tokens
  - ``vlm.detector``  answer logits -> P(FAKE): the VLM as a detector like every other

Training
- ``engine``      the Accelerate training loop (early stopping, best weights, several processes)
- ``runs``        is this run the one on disk? fingerprints, "changed: ..." reasons, resume or
                  reload, checkpoints and caches written beside and renamed in
- ``gpu``         the precision to compute in (bf16 where native, fp16 on a T4), an optional GPU
                  memory cap (``AIDETECT_GPU_MEMORY_GB``) and the peak memory a run used
- ``progress``    progress bars that headless runs switch off
- ``runlog``      "trained" / "resumed at epoch N" / "reloaded (same settings)", per phase

Evaluation and results
- ``metrics``     classification and calibration metrics
- ``artifacts``   results/<method>/metrics.json, predictions.csv, self-describing model folders
- ``evaluation``  notebook 07: every method side by side (discovery, bootstrap, McNemar, folders)
- ``calibration`` temperature scaling and reliability
- ``robustness``  fixed corruptions: does a detector survive what happens to images online?
- ``domain``      does an input resemble the training data? the check every model folder carries
- ``domain_eval`` notebook 07's measurement of that check
- ``explain``     Grad-CAM for CNNs and ViTs (notebook 07 and the web demo)
- ``plots``       every figure the notebooks show
- ``diagrams``    concept figures drawn by code, shown before each idea's code (ViT, LoRA, ...)

Running
- ``params``      a notebook's parameters from ``notebooks/profiles.yaml``
- ``pipeline``    the papermill runner ``python -m aidetect_utils.pipeline``
- ``publish``     learner copies and smoke snapshots from executed notebooks; the Colab header
- ``predict``     the command line ``python -m aidetect_utils.predict``
- ``app``         the web demo ``python -m aidetect_utils.app`` (Gradio, localhost)

Not in the package: the GPU measurement kit (exact-architecture random checkpoints, SID_Set-like
data, the scripts that measure on a lent GPU) is ``gpu_kit/`` beside it.
"""
import os as _os
CLASS_NAMES = ["REAL", "FAKE"]  # index = label; the positive class is FAKE (AI-generated)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

__version__ = "0.1.0"

if _os.environ.get("AIDETECT_GPU_MEMORY_GB"):   # rehearse a smaller GPU (see gpu.py)
    from .gpu import cap_memory_at_cuda_init
    cap_memory_at_cuda_init()
