import DistillCore
import DistillONNX
import Foundation
import XCTest

/// Fixtures made by tools/make_fixtures.py with the onnx Python package (an independent writer).
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures")

func fixtureModel(_ name: String) -> String { fixtures.appendingPathComponent("models/\(name)/model.onnx").path }

func temporaryDirectory() throws -> URL {
  let url = FileManager.default.temporaryDirectory.appendingPathComponent("distill-tests-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  return url
}

final class ImportExportTests: XCTestCase {
  /// Reading and writing back a model with no change reproduces the onnx package's bytes exactly:
  /// every field, attribute kind, dtype encoding, function and subgraph survives.
  func testRoundTripIsByteIdentical() throws {
    for name in ["tiny_fpn", "constant_weights", "if_subgraph", "float16_init", "all_dtypes", "attributes_custom_op", "symbolic_dims", "negative_dims"] {
      let path = fixtureModel(name)
      let model = try ModelFile.read(path)
      let original = try XCTUnwrap(FileManager.default.contents(atPath: path))
      XCTAssertEqual(ModelFile.encode(model), [UInt8](original), "\(name) changed in a round trip")
    }
  }

  /// The same values stored through raw_data and through the typed fields decode to the same bytes.
  func testTypedFieldsAndRawDataAgreeForEveryDtype() throws {
    let graph = try XCTUnwrap(try ModelFile.read(fixtureModel("all_dtypes")).graph)
    let tensors = Dictionary(uniqueKeysWithValues: graph.initializers.map { ($0.name!, $0) })
    let dtypes = ["float32", "float16", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
    for dtype in dtypes {
      let raw = try XCTUnwrap(tensors["raw_\(dtype)"]), typed = try XCTUnwrap(tensors["typed_\(dtype)"])
      XCTAssertEqual(raw.encoding, .raw)
      XCTAssertEqual(typed.encoding, .typed)
      XCTAssertEqual(raw.dataType.description, dtype)
      XCTAssertEqual(raw.bytes.count, raw.elementCount * raw.dataType.byteSize!)
      XCTAssertEqual(raw.bytes, typed.bytes, "\(dtype): raw_data and typed field decode differently")
    }
    let int64 = try XCTUnwrap(tensors["raw_int64"])
    let values = int64.bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
    XCTAssertTrue(values.contains(Int64.min) && values.contains(Int64.max))
  }

  func testConstantNodeWeightsAreParameters() throws {
    let graph = try XCTUnwrap(try ModelFile.read(fixtureModel("constant_weights")).graph)
    XCTAssertTrue(graph.initializers.isEmpty)
    let constants = graph.nodes.filter { $0.opType == "Constant" }
    XCTAssertFalse(constants.isEmpty)
    let floats = graph.allTensors.filter { $0.dataType == .float }
    XCTAssertGreaterThan(floats.reduce(0) { $0 + $1.elementCount }, 100)
    XCTAssertTrue(constants.contains { if case .float = $0.attributes.first?.value { return true } else { return false } })
    XCTAssertTrue(constants.contains { if case .ints = $0.attributes.first?.value { return true } else { return false } })
  }

  func testIfBranchesAreImportedWithOuterReferences() throws {
    let graph = try XCTUnwrap(try ModelFile.read(fixtureModel("if_subgraph")).graph)
    let ifNode = try XCTUnwrap(graph.nodes.first { $0.opType == "If" })
    XCTAssertEqual(ifNode.subgraphs.count, 2)
    let outer = ifNode.subgraphs.map(\.outerReferences).reduce(Set<String>()) { $0.union($1) }
    XCTAssertTrue(outer.contains("outer_bias"), "branches read \(outer)")
  }

  func testEveryAttributeKindIsCarried() throws {
    let model = try ModelFile.read(fixtureModel("attributes_custom_op"))
    let node = try XCTUnwrap(model.graph?.nodes.first { $0.opType == "MyOp" })
    XCTAssertEqual(node.domain, "com.example")
    let kinds = Set(node.attributes.map(\.value.kindName))
    for kind in ["float", "int", "string", "tensor", "graph", "floats", "ints", "strings", "tensors", "graphs"] {
      XCTAssertTrue(kinds.contains(kind), "missing \(kind) in \(kinds)")
    }
    XCTAssertEqual(model.functions.count, 1)
    XCTAssertEqual(model.opsetVersion(forDomain: "com.example"), 1)
  }

  func testExternalDataIsLoadedAndWrittenBesideTheOutput() throws {
    let path = fixtureModel("external_data")
    let model = try ModelFile.read(path)
    let external = try XCTUnwrap(model.graph?.initializers.filter { $0.encoding == .external })
    XCTAssertGreaterThanOrEqual(external.count, 2)
    for tensor in external { XCTAssertEqual(tensor.bytes.count, tensor.elementCount * 4) }

    let directory = try temporaryDirectory()
    let out = directory.appendingPathComponent("copy.onnx").path
    try ModelFile.write(model, to: out, protecting: ModelFile.sourceFiles(of: model, readFrom: path))
    XCTAssertTrue(FileManager.default.fileExists(atPath: out + ".data"))
    let reread = try ModelFile.read(out)
    XCTAssertEqual(reread.graph?.initializers.map(\.bytes), model.graph?.initializers.map(\.bytes))
    let locations = Set(reread.graph!.initializers.compactMap { $0.externalData.first { $0.key == "location" }?.value })
    XCTAssertEqual(locations, ["copy.onnx.data"])
  }

  /// Past the inline limit the largest initializers move to external data (2 GiB by default).
  func testLargeInitializersMoveToExternalData() throws {
    let model = try ModelFile.read(fixtureModel("tiny_fpn"))
    var options = ExportOptions()
    options.maxInlineBytes = 4096
    let directory = try temporaryDirectory()
    let out = directory.appendingPathComponent("big.onnx").path
    try ModelFile.write(model, to: out, options: options)
    let reread = try ModelFile.read(out)
    let inline = reread.graph!.allTensors.filter { $0.encoding != .external }.reduce(0) { $0 + $1.bytes.count }
    XCTAssertLessThanOrEqual(inline, 4096)
    XCTAssertTrue(reread.graph!.initializers.contains { $0.encoding == .external })
    XCTAssertEqual(reread.graph?.initializers.map(\.bytes), model.graph?.initializers.map(\.bytes))
  }

  func testWriteRefusesToReplaceItsInput() throws {
    let directory = try temporaryDirectory()
    let path = directory.appendingPathComponent("model.onnx").path
    try FileManager.default.copyItem(atPath: fixtureModel("tiny_fpn"), toPath: path)
    let before = FileManager.default.contents(atPath: path)
    let model = try ModelFile.read(path)
    XCTAssertThrowsError(try ModelFile.write(model, to: path, protecting: [path])) { error in
      XCTAssertEqual(error as? ONNXError, .refusedOverwrite(file: path))
    }
    XCTAssertEqual(FileManager.default.contents(atPath: path), before)
  }

  func testFailedWriteLeavesNothingBehind() throws {
    let model = try ModelFile.read(fixtureModel("tiny_fpn"))
    let directory = try temporaryDirectory()
    let missing = directory.appendingPathComponent("no/such/dir/out.onnx").path
    XCTAssertThrowsError(try ModelFile.write(model, to: missing))
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [])
  }

  func testNodesOutOfOrderAreSortedTopologically() throws {
    var model = try ModelFile.read(fixtureModel("tiny_fpn"))
    let sorted = model.graph!.nodes.map(\.name)
    model.graph!.nodes.reverse()
    let reread = try ModelFile.decode(ModelFile.encode(model))
    let order = reread.graph!.nodes.map(\.name)
    XCTAssertEqual(Set(order), Set(sorted))
    var position: [String: Int] = [:]
    for (index, node) in reread.graph!.nodes.enumerated() { for output in node.outputs { position[output] = index } }
    for (index, node) in reread.graph!.nodes.enumerated() {
      for input in node.inputs { if let producer = position[input] { XCTAssertLessThan(producer, index, "\(node.name) runs before \(input)") } }
    }
  }

  func testFileSizeLimitAndMemoryBudget() throws {
    var options = ImportOptions()
    options.maxFileBytes = 1000
    XCTAssertThrowsError(try ModelFile.read(fixtureModel("tiny_fpn"), options: options)) { error in
      guard case .fileTooLarge = error as? ONNXError else { return XCTFail("\(error)") }
    }
    options = ImportOptions()
    options.memoryBudget = 10_000
    XCTAssertThrowsError(try ModelFile.read(fixtureModel("tiny_fpn"), options: options)) { error in
      guard case .overBudget = error as? ONNXError else { return XCTFail("\(error)") }
    }
  }
}
