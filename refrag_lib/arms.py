"""The course's one vocabulary for what it compares: the names below are the keys of every metrics.json,
table and plot, and the words the notebooks use.

- READERS, how a model reads the retrieved passages: rag (as tokens; RAG-FT once fine-tuned) and refrag (as
  chunk vectors, the selector's chunks expanded). SFT trains one model of each; answering serves either.
- CONTEXT_ARMS, notebook 03's next-paragraph comparison at equal context: no context, the last s/k tokens
  (as many decoder positions as REFRAG's vectors), REFRAG's s/k vectors, the full context as tokens.
- QA_ROWS, notebook 05's table: no context, RAG-FT, REFRAG on the same K passages, and REFRAG given the
  as many passages as fit in RAG-FT's time to first token at K (the paper's Figure 4 question).
- TIMED_ARMS, notebook 06's benchmark: RAG, and REFRAG with its chunk vectors cached or encoded at question
  time.
"""

NO_CONTEXT = "no_context"
RAG = "rag"
REFRAG = "refrag"
LAST_TOKENS = "last_tokens"
FULL_CONTEXT = "full_context"
REFRAG_EQUAL_LATENCY = "refrag_equal_latency"
REFRAG_CACHE = "refrag_cache"
REFRAG_NOCACHE = "refrag_nocache"

READERS = (RAG, REFRAG)
CONTEXT_ARMS = (NO_CONTEXT, FULL_CONTEXT, LAST_TOKENS, REFRAG)
QA_ROWS = (NO_CONTEXT, RAG, REFRAG, REFRAG_EQUAL_LATENCY)
TIMED_ARMS = (RAG, REFRAG_CACHE, REFRAG_NOCACHE)
