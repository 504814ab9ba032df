"""Datasets: the COCO-2017 manifest sample, image folders, bundled samples, and robust image loading."""
