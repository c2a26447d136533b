import DistillCore
import DistillONNX
import Foundation
import XCTest

/// The ONNX backend node tests from Debian's libonnx-testdata, driven by the manifests in
/// Tests/Conformance/*.txt (one test name per line; `#` starts a comment). Tests left out are listed
/// with their reasons in Tests/Conformance/excluded.md.
///
/// `DISTILL_CONFORMANCE_PROBE=REGEX swift test --filter ConformanceTests` runs every node test whose
/// name matches, listed or not, and prints PASS/FAIL lines instead of asserting.
final class ConformanceTests: XCTestCase {
  static let dataDirectory = "/usr/share/libonnx-testdata/data/node"
  /// The Gradient op's tests live among the "simple" model tests.
  static let searchDirectories = [dataDirectory, "/usr/share/libonnx-testdata/data/simple"]
  static let manifestDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Conformance")
  static let relativeTolerance: Float = 1e-3
  static let absoluteTolerance: Float = 1e-5

  static func manifest() throws -> [String] {
    let files = try FileManager.default.contentsOfDirectory(atPath: manifestDirectory.path).filter { $0.hasSuffix(".txt") }.sorted()
    return try files.flatMap { file in
      try String(contentsOf: manifestDirectory.appendingPathComponent(file), encoding: .utf8).split(separator: "\n").compactMap { line in
        let name = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
        return name.isEmpty ? nil : name
      }
    }
  }

  /// Runs one node test; returns nil when every output matches, else what went wrong.
  static func run(_ name: String) -> String? {
    let directory = searchDirectories.map { "\($0)/\(name)" }.first { FileManager.default.fileExists(atPath: $0) }
      ?? "\(dataDirectory)/\(name)"
    do {
      let model = try ModelFile.read("\(directory)/model.onnx")
      let interpreter = try Interpreter(model: model)
      let graph = model.graph!
      let sets = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("test_data_set_") }.sorted()
      guard !sets.isEmpty else { return "no test_data_set_* directory" }
      for set in sets {
        let dataDirectory = "\(directory)/\(set)"
        var feeds: [String: Tensor] = [:]
        for (index, input) in graph.inputs.enumerated() {
          let path = "\(dataDirectory)/input_\(index).pb"
          guard FileManager.default.fileExists(atPath: path) else { continue }
          feeds[input.name] = try Tensor(ModelFile.readTensor(path))
        }
        let outputs = try interpreter.run(feeds).outputs
        for (index, output) in outputs.enumerated() {
          let expected = try Tensor(ModelFile.readTensor("\(dataDirectory)/output_\(index).pb"))
          if let problem = compare(output, expected) { return "\(set) output \(index) '\(graph.outputs[index].name)': \(problem)" }
        }
      }
      return nil
    } catch {
      return "\(error)"
    }
  }

  static func compare(_ actual: Tensor, _ expected: Tensor) -> String? {
    if actual.dtype != expected.dtype { return "dtype \(actual.dtype), expected \(expected.dtype)" }
    if actual.shape != expected.shape { return "shape \(actual.shapeDescription), expected \(expected.shapeDescription)" }
    if expected.isFloat {
      for (index, (a, e)) in zip(actual.floats, expected.floats).enumerated() {
        if a.isNaN && e.isNaN { continue }
        if a == e { continue }
        if !(abs(a - e) <= absoluteTolerance + relativeTolerance * abs(e)) {
          return "element \(index) is \(a), expected \(e)"
        }
      }
    } else if let index = zip(actual.ints, expected.ints).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
      return "element \(index) is \(actual.ints[index]), expected \(expected.ints[index])"
    }
    return nil
  }

  func testManifestPasses() throws {
    guard FileManager.default.fileExists(atPath: Self.dataDirectory) else {
      return XCTFail("\(Self.dataDirectory) is missing: apt-get install libonnx-testdata (make test does)")
    }
    if let pattern = ProcessInfo.processInfo.environment["DISTILL_CONFORMANCE_PROBE"] {
      let regex = try Regex(pattern)
      let names = try FileManager.default.contentsOfDirectory(atPath: Self.dataDirectory).filter { $0.contains(regex) }.sorted()
      var passed = 0
      for name in names {
        if let problem = Self.run(name) { print("FAIL \(name): \(problem)") } else { passed += 1; print("PASS \(name)") }
      }
      print("probe: \(passed) of \(names.count) passed")
      return
    }
    let names = try Self.manifest()
    XCTAssertEqual(Set(names).count, names.count, "a test is listed twice")
    var failures: [String] = []
    for name in names {
      if let problem = Self.run(name) { failures.append("\(name): \(problem)") }
    }
    print("conformance: \(names.count - failures.count) of \(names.count) listed node tests pass")
    XCTAssert(failures.isEmpty, "failing node tests:\n" + failures.joined(separator: "\n"))
  }
}
