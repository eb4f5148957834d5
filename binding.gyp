{
  "targets": [
    {
      "target_name": "bpfmesh",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/object.cc",
        "native/program.cc",
        "native/map.cc",
        "native/link.cc",
        "native/socket.cc",
        "native/pin.cc",
        "native/probe.cc",
        "native/lock.cc",
        "native/ringbuf.cc",
        "native/netns-socket.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "<!@(pkg-config --cflags libbpf)"],
      "libraries": ["<!@(pkg-config --libs libbpf)"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "bpfmesh-cni-forward",
      "type": "executable",
      "sources": ["native/cni-forward.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"]
    },
    {
      "target_name": "bpf_objects",
      "type": "none",
      "actions": [
        {
          "action_name": "build_bpf",
          "inputs": ["<!@(ls bpf/*.c bpf/*.h bpf/Makefile)"],
          "outputs": ["build/bpf/.stamp"],
          "action": ["make", "-s", "-C", "bpf"]
        }
      ]
    }
  ]
}
