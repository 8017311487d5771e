"""transformers' own image-processing tests (`ImageProcessingTestMixin`, `PostProcessSemanticSegmentationTestMixin`
of the installed release) run against M2DinoImageProcessor.

Each overridden test says why in one line; the list is in docs/conformance.md ("Image processor").
"""

import unittest

from common_tests import load_transformers_test_module

import modeling_m2dino as m2dino

common = load_transformers_test_module("test_image_processing_common")


class M2DinoImageProcessingTester(common.ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("batch_size", 3)
        kwargs.setdefault("min_resolution", 20)
        kwargs.setdefault("max_resolution", 64)
        kwargs.setdefault("size", {"height": 32, "width": 32})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", [0.5, 0.4, 0.3])
        kwargs.setdefault("image_std", [0.2, 0.25, 0.3])
        kwargs.setdefault("do_convert_rgb", True)
        kwargs.setdefault("num_labels", 4)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin looks the class up in transformers' own mapping by the test folder's name; ours is registered.
        return {"pil": m2dino.M2DinoImageProcessor}


class M2DinoImageProcessingTest(
    common.ImageProcessingTestMixin, common.PostProcessSemanticSegmentationTestMixin, unittest.TestCase
):
    image_processor_tester_class = M2DinoImageProcessingTester
    test_cast_dtype = True

    @unittest.skip(reason="torchvision is not a dependency (a 5 GB torch build); the processor already works on torch tensors")
    def test_new_models_require_torchvision_backend(self):
        pass

    @unittest.skip(reason="one backend: M2DinoImageProcessor is registered for 'pil' only and resizes with torch")
    def test_backends_equivalence(self):
        pass

    @unittest.skip(reason="one backend: M2DinoImageProcessor is registered for 'pil' only and resizes with torch")
    def test_backends_equivalence_batched(self):
        pass

    @unittest.skip(reason="one backend: M2DinoImageProcessor is registered for 'pil' only and resizes with torch")
    def test_save_load_backends(self):
        pass

    @unittest.skip(reason="one backend: M2DinoImageProcessor is registered for 'pil' only and resizes with torch")
    def test_save_load_backends_auto(self):
        pass

    @unittest.skip(reason="no torchvision backend, so no explicit-None attribute of a torchvision processor to keep")
    def test_fast_image_processor_explicit_none_preserved(self):
        pass

    @unittest.skip(reason="torchvision is not installed with this package, so every test here already runs without it")
    def test_pil_can_run_without_torchvision(self):
        pass

    @unittest.skip(reason="needs torchvision and an accelerator (transformers marks it slow); no torchvision backend here")
    def test_can_compile_torchvision_backend(self):
        pass
