// swift-tools-version:6.0
import PackageDescription

let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
  name: "distill",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "distill", targets: ["distill"]),
    .library(name: "DistillCore", targets: ["DistillCore"]),
    .library(name: "DistillONNX", targets: ["DistillONNX"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
  ],
  targets: [
    .target(
      name: "COnnx", path: "proto", sources: ["onnx.pb-c.c", "onnx_wire.c"], publicHeadersPath: "include",
      linkerSettings: [.linkedLibrary("protobuf-c")]),
    .target(
      name: "CTensorBoard", path: "proto/tensorboard",
      sources: ["event.pb-c.c", "histogram.pb-c.c", "resource_handle.pb-c.c", "summary.pb-c.c", "tensor.pb-c.c", "tensor_shape.pb-c.c", "types.pb-c.c"],
      publicHeadersPath: "include", linkerSettings: [.linkedLibrary("protobuf-c")]),
    .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
    .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
    .target(name: "DistillCore", dependencies: ["CBLAS", "CDNNL"], swiftSettings: optimize),
    .target(name: "DistillONNX", dependencies: ["DistillCore", "COnnx"], swiftSettings: optimize),
    .target(name: "CImage", path: "Sources/CImage", linkerSettings: [.linkedLibrary("png"), .linkedLibrary("jpeg")]),
    .systemLibrary(name: "CCairo", path: "Sources/CCairo", pkgConfig: "cairo"),
    .target(
      name: "DistillDetection", dependencies: ["DistillCore", "CImage", "CCairo", .product(name: "Yams", package: "Yams")],
      swiftSettings: optimize),
    .target(
      name: "DistillTrain",
      dependencies: ["DistillCore", "DistillONNX", "DistillDetection", "CTensorBoard", .product(name: "Yams", package: "Yams")],
      swiftSettings: optimize),
    .executableTarget(
      name: "distill",
      dependencies: ["DistillCore", "DistillONNX", "DistillDetection", "DistillTrain", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      swiftSettings: optimize),
    .testTarget(name: "DistillONNXTests", dependencies: ["DistillONNX", "DistillCore"]),
    .testTarget(name: "CLITests", dependencies: ["DistillCore", "DistillONNX"]),
    .testTarget(name: "ConformanceTests", dependencies: ["DistillCore", "DistillONNX"]),
    .testTarget(name: "RuntimeTests", dependencies: ["DistillCore", "DistillONNX"]),
    .testTarget(name: "GradientTests", dependencies: ["DistillCore", "DistillONNX"]),
    .testTarget(name: "DistillTrainTests", dependencies: ["DistillTrain", "DistillCore", "DistillONNX"]),
    .testTarget(name: "DetectionTests", dependencies: ["DistillDetection", "DistillCore", "DistillONNX"]),
  ],
  // Numeric kernels share raw buffers across DispatchQueue.concurrentPerform iterations by design;
  // Swift 6's strict Sendable checking would demand wrappers around every such loop.
  swiftLanguageModes: [.v5]
)
