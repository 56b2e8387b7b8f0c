"""The Gradio app and the loaded service behind it."""
