"""`triptych-evaluate`: scores of the encoder, the VLM and the generator on the shapes world."""
