"""`tinyseek.engine`, the import path of the engine API, which lives in tinyseek/inference/."""

from tinyseek.chat import cli_chat, cli_generate  # noqa: F401
from tinyseek.inference.engine import Engine, PromptRows, StepEvent  # noqa: F401
from tinyseek.inference.load import load_engine  # noqa: F401
from tinyseek.inference.sampling import SamplingParams  # noqa: F401
from tinyseek.inference.sequence import Completion  # noqa: F401
