"""Running the course: the notebooks' helpers, the command line's plumbing, Colab, checks, plots and the
teacher's tools. Nothing here is REFRAG itself: the method and its pipeline are the modules of refrag_lib."""
