"""Speech to text: log-mel features on Ray Data, a CTC encoder (transformer, conformer or recurrent)
on Ray Train, greedy/beam decoding, and an OpenAI-compatible /v1/audio/transcriptions endpoint."""

from lmstack.config import TaskSection
from lmstack.tasks.speech.config import SpeechConfig, check_recipe

SECTION = TaskSection("speech", "speech", SpeechConfig, required=False, check=check_recipe)
SPEC = "lmstack.tasks.speech.spec:SpeechSpec"
