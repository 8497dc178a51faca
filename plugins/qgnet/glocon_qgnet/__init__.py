"""QGNet: prior + guided region maps, category guider and the FEM decoder, as a glocon plugin."""
