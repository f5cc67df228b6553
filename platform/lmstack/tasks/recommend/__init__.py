"""Sequential recommendation from viewing history: SASRec (causal self-attention over item ids),
GRU4Rec and a popularity baseline, leave-one-out split, HR/NDCG@10 (sampled and full ranking)."""

from lmstack.config import TaskSection
from lmstack.tasks.recommend.config import RecommendConfig, check_recipe

SECTION = TaskSection("recommend", "recommend", RecommendConfig, check=check_recipe)
SPEC = "lmstack.tasks.recommend.spec:RecommendSpec"
