"""The paper's evaluation protocol (section 4) as plain functions: scores and reports from images and the
models that judge them, independent of Prefect, of the lake's stages and of the models being scored."""
