"""refrag_lib: the code behind the REFRAG course.

The notebooks narrate and plot; everything worth testing lives here: presets (config), model
loading (hub), the synthetic data set (data), retrieval (index), the REFRAG model (model), and the
command line (__main__).
"""

__version__ = "0.1.0"
