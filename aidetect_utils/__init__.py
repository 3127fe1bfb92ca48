"""aidetect_utils: the shared code behind the real-or-AI image detection notebooks.

One concept per module:

- ``images``    robust decoding of any image file into RGB uint8
- ``data``      CIFAKE and folder-per-class sources, the decoded cache, the download
- ``splits``    content deduplication, stratified train/val/test splits, prepared data
- ``sidset``    the SID_Set dataset from the Hugging Face hub
- ``transforms``torch datasets and torchvision preprocessing/augmentation
- ``models``    model builders (registered by name for saved model folders)
- ``registry``  builder names -> modules, so artifacts never imports a model module
- ``losses``    answer-token losses of the vision-language model (cross-entropy, focal)
- ``vlm``       Qwen2.5-VL as a detector (a sub-package: backends, tiny, prompt, training, detector, data)
- ``engine``    the Accelerate training loop (early stopping, checkpoints, resume, fingerprints)
- ``runlog``    what each training phase did, on the headless runner's console
- ``metrics``   classification and calibration metrics
- ``evaluation``every method side by side: statistics, robustness, calibration, folders
- ``explain``   Grad-CAM for CNNs and ViTs
- ``plots``     every figure the notebooks show
- ``artifacts`` results/<method>/metrics.json, predictions.csv and model folders
- ``predict``   the command line ``python -m aidetect_utils.predict``
- ``pipeline``  the papermill runner ``python -m aidetect_utils.pipeline``
- ``gpu``       an optional GPU memory cap (``AIDETECT_GPU_MEMORY_GB``) and peak memory
- ``rehearsal`` exact-architecture random checkpoints and SID_Set-like data, built offline
"""
import os as _os
LABELS = {"REAL": 0, "FAKE": 1}
CLASS_NAMES = ["REAL", "FAKE"]  # index = label; the positive class is FAKE (AI-generated)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

__version__ = "0.1.0"

if _os.environ.get("AIDETECT_GPU_MEMORY_GB"):   # rehearse a smaller GPU (see gpu.py)
    from .gpu import cap_memory_at_cuda_init
    cap_memory_at_cuda_init()
