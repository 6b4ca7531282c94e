import sys

from napari_async_slicing._bench._main import bench_main

sys.exit(bench_main())
