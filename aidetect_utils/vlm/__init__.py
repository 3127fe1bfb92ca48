"""A vision-language model (Qwen2.5-VL) as a real-or-AI detector, with LoRA (notebooks 05, 06).

The model sees an image and one fixed question, and answers one word: ``Real`` or ``Fake``.
One module per concern:

- ``backends``  loading the base model (Unsloth on a CUDA GPU, else transformers + peft), LoRA
- ``tiny``      a small Qwen2.5-VL and its processor built offline (smoke/cpu profiles, tests)
- ``prompt``    the question, the answers, and the batches with answer-only labels
- ``training``  LoRA fine-tuning with ``Trainer``: answer-token cross-entropy or focal loss;
                ``Recipe`` (what notebook 05's recipe is made of) and ``run_recipe``: that
                recipe in one call (notebook 06 changes parts)
- ``detector``  the fine-tuned model as a detector (answer logits -> P(FAKE)), its model folder
- ``data``      CIFAKE subsets or SID_Set for these notebooks

Everything the notebooks use is importable from ``aidetect_utils.vlm`` directly.
"""
import warnings

# transformers 5.x deprecation raised from inside peft/Trainer, not from anything a reader can change
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)

from .backends import (FULL_MODEL, LM_ATTENTION, add_lora, build_lora_model, describe_model,  # noqa: E402
                       for_inference, load_base, lora_summary, recipe_model, select_backend)
from .data import detection_data, recipe_data  # noqa: E402
from .detector import (VLMDetector, batch_logits, evaluate_and_save, inference_detector, score,  # noqa: E402
                       to_model, vlm_preprocessing)
from .prompt import (ANSWERS, END_OF_TURN, QUESTION, VLMCollator, answer_suffix, answer_token_ids,  # noqa: E402
                     messages, prompt_text, to_pil)
from .tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, TINY, build_tiny_processor, build_tiny_qwen_vl, tiny_config  # noqa: E402
from .training import Recipe, RecipeRun, loss_history, loss_table, print_losses, run_recipe, train_lora  # noqa: E402
