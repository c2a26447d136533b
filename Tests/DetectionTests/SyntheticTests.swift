import DistillDetection
import Foundation
import XCTest

/// `SyntheticDataset`: determinism, boxes against the painted pixels, class and size statistics,
/// unannotated distractors, and the files read back by the COCO reader and by pycocotools.
final class SyntheticTests: XCTestCase {
  var scratch: URL!

  override func setUpWithError() throws {
    scratch = FileManager.default.temporaryDirectory.appendingPathComponent("synthetic-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

  func files(under directory: URL) throws -> [String: Data] {
    var found: [String: Data] = [:]
    let enumerator = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil)!
    for case let url as URL in enumerator where !url.hasDirectoryPath {
      found[String(url.path.dropFirst(directory.path.count))] = try Data(contentsOf: url)
    }
    return found
  }

  func testTheSameSeedGivesByteIdenticalFiles() throws {
    let first = scratch.appendingPathComponent("a"), second = scratch.appendingPathComponent("b"), other = scratch.appendingPathComponent("c")
    _ = try SyntheticDataset.generate(out: first.path, images: 7, seed: 42, valFraction: 0.3)
    _ = try SyntheticDataset.generate(out: second.path, images: 7, seed: 42, valFraction: 0.3)
    _ = try SyntheticDataset.generate(out: other.path, images: 7, seed: 43, valFraction: 0.3)
    let a = try files(under: first), b = try files(under: second), c = try files(under: other)
    XCTAssertEqual(
      Set(a.keys),
      Set(["/train.json", "/val.json"] + (1...5).map { String(format: "/train/%06d.png", $0) } + (6...7).map { String(format: "/val/%06d.png", $0) }))
    XCTAssertEqual(a, b)
    XCTAssertEqual(Set(a.keys), Set(c.keys))
    XCTAssertTrue(a.keys.allSatisfy { a[$0] != c[$0] }, "another seed changes every file")
  }

  /// Each annotated box lies inside the picture and holds pixels of its object's colour; the file
  /// holds exactly the scene's pixels.
  func testBoxesAreInsideThePictureAndCoverTheirColour() throws {
    _ = try SyntheticDataset.generate(out: scratch.path, images: 12, seed: 5, valFraction: 0)
    var checked = 0
    for index in 0..<12 {
      let scene = try SyntheticDataset.scene(seed: 5, index: index, size: 320)
      let written = try Image.load(scratch.appendingPathComponent(String(format: "train/%06d.png", index + 1)).path)
      XCTAssertEqual(written.pixels, scene.image.pixels)
      for object in scene.objects where object.annotated {
        let box = try XCTUnwrap(object.box)
        XCTAssertTrue(box.x >= 0 && box.y >= 0 && box.width >= 2 && box.height >= 2 && box.x + box.width <= 320 && box.y + box.height <= 320, "\(box)")
        var matching = 0
        for y in box.y..<(box.y + box.height) {
          for x in box.x..<(box.x + box.width) {
            let at = (y * 320 + x) * 3
            let pixel = SIMD3<Int>(Int(scene.image.pixels[at]), Int(scene.image.pixels[at + 1]), Int(scene.image.pixels[at + 2]))
            let difference = pixel &- SIMD3<Int>(truncatingIfNeeded: object.color)
            if (0..<3).allSatisfy({ abs(difference[$0]) <= 12 }) { matching += 1 }
          }
        }
        // At least 30% of the object's half-covered pixels are visible, and most of those keep its colour.
        XCTAssertGreaterThanOrEqual(Double(matching), 0.5 * SyntheticDataset.minimumVisibleFraction * Double(object.pixels), "\(object)")
        XCTAssertGreaterThanOrEqual(object.visibleFraction, SyntheticDataset.minimumVisibleFraction)
        checked += 1
      }
      // Boxes of objects no later painter touches are the shape's whole extent: visible fraction 1.
      XCTAssertTrue(scene.objects.contains { $0.visibleFraction == 1 })
    }
    XCTAssertGreaterThan(checked, 60)
  }

  func testClassesSizesAndAspectRatiosVary() throws {
    var perClass = [Int](repeating: 0, count: SyntheticDataset.classNames.count)
    var areas: [Int] = [], elongated = 0, occluded = 0, partlyHidden = 0
    for index in 0..<40 {
      for object in try SyntheticDataset.scene(seed: 9, index: index).objects {
        if !object.annotated {
          occluded += 1
          continue
        }
        let box = object.box!
        perClass[object.classIndex] += 1
        areas.append(box.width * box.height)
        if 2 * max(box.width, box.height) >= 3 * min(box.width, box.height) { elongated += 1 }
        if object.visibleFraction < 0.95 { partlyHidden += 1 }
      }
    }
    let total = areas.count
    XCTAssertGreaterThan(total, 250)
    XCTAssertTrue(perClass.allSatisfy { $0 >= total / 20 }, "every class well represented: \(perClass)")
    let small = areas.filter { $0 < 32 * 32 }.count
    XCTAssertGreaterThan(Double(small) / Double(total), 0.4, "small objects: \(small) of \(total)")
    XCTAssertGreaterThan(areas.filter { $0 >= 48 * 48 }.count, total / 20, "some large objects")
    XCTAssertLessThan(areas.min()!, 10 * 10)
    XCTAssertGreaterThan(elongated, total / 20, "elongated boxes (ellipses, diamonds, occluded parts)")
    XCTAssertGreaterThan(partlyHidden, total / 20, "partly occluded objects")
    XCTAssertGreaterThan(occluded, 0, "some objects are hidden too much to annotate")
  }

  func testDistractorsArePaintedButNotAnnotated() throws {
    var kinds = Set<SyntheticDataset.DistractorKind>(), distractors = 0, annotated = 0
    for index in 0..<12 {
      let scene = try SyntheticDataset.scene(seed: 3, index: index)
      XCTAssertFalse(scene.distractors.isEmpty)
      distractors += scene.distractors.count
      kinds.formUnion(scene.distractors.map(\.kind))
      annotated += scene.objects.filter(\.annotated).count
    }
    XCTAssertEqual(kinds, Set(SyntheticDataset.DistractorKind.allCases))
    XCTAssertGreaterThan(distractors, 24)
    let summary = try SyntheticDataset.generate(out: scratch.path, images: 12, seed: 3, valFraction: 0.25)
    XCTAssertEqual(summary.distractors, distractors)
    XCTAssertEqual(summary.annotations, annotated)
    let train = try COCOAnnotations.load(scratch.appendingPathComponent("train.json").path)
    let val = try COCOAnnotations.load(scratch.appendingPathComponent("val.json").path)
    XCTAssertEqual(train.annotations.count + val.annotations.count, annotated, "the files hold the objects only")
  }

  func testTheFilesLoadWithTheCOCOReaderAndAsASource() throws {
    let summary = try SyntheticDataset.generate(out: scratch.path, images: 10, seed: 11, size: 256, valFraction: 0.2)
    XCTAssertEqual([summary.trainImages, summary.valImages], [8, 2])
    let train = try COCOAnnotations.load(scratch.appendingPathComponent("train.json").path)
    XCTAssertEqual(train.categories.map(\.id), Array(1...10))
    XCTAssertEqual(train.categories.map(\.name), SyntheticDataset.classNames)
    XCTAssertEqual(train.images.map(\.id), Array(1...8))
    XCTAssertTrue(train.images.allSatisfy { $0.width == 256 && $0.height == 256 })
    XCTAssertEqual(Set(train.annotations.map(\.id)).count, train.annotations.count)
    for object in train.annotations {
      XCTAssertEqual(object.area, object.box[2] * object.box[3])
      XCTAssertFalse(object.isCrowd)
    }
    let source = try train.source(imageDirectory: scratch.appendingPathComponent("train").path)
    XCTAssertEqual(source.count, 8)
    let sample = try source.sample(at: 3)
    XCTAssertEqual([sample.image.width, sample.image.height], [256, 256])
    let scene = try SyntheticDataset.scene(seed: 11, index: 3, size: 256)
    XCTAssertEqual(sample.image.pixels, scene.image.pixels)
    XCTAssertEqual(sample.labels, scene.objects.filter(\.annotated).map(\.classIndex))
    let boxes = scene.objects.filter(\.annotated).map { b in [b.box!.x, b.box!.y, b.box!.x + b.box!.width, b.box!.y + b.box!.height].map(Float.init) }
    XCTAssertEqual(sample.boxes, boxes)
    let val = try COCOAnnotations.load(scratch.appendingPathComponent("val.json").path)
    XCTAssertEqual(val.images.map(\.fileName), ["000009.png", "000010.png"])
    XCTAssertTrue(Set(val.annotations.map(\.id)).isDisjoint(with: train.annotations.map(\.id)))
  }

  /// tools/check_synth.py reads the files with pycocotools. Needs a Python with pycocotools:
  /// `DISTILL_PYCOCOTOOLS_PYTHON`, else the check environment of `make test` (.build-venv/).
  func testPycocotoolsReadsTheFiles() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [ProcessInfo.processInfo.environment["DISTILL_PYCOCOTOOLS_PYTHON"]].compactMap { $0 }
      + [".build-venv/bin/python", ".build-venv-torch/bin/python"].map { root.appendingPathComponent($0).path }
    guard let python = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) && run($0, ["-c", "import pycocotools"]).status == 0 }) else {
      throw XCTSkip("no Python with pycocotools (set DISTILL_PYCOCOTOOLS_PYTHON or run make python-deps); tried \(candidates)")
    }
    _ = try SyntheticDataset.generate(out: scratch.path, images: 12, seed: 2, valFraction: 0.25)
    let result = run(python, [root.appendingPathComponent("tools/check_synth.py").path, scratch.path])
    XCTAssertEqual(result.status, 0, result.output)
    XCTAssertTrue(result.output.contains("train: 9 images"), result.output)
    XCTAssertTrue(result.output.contains("val: 3 images"), result.output)
  }

  func testANonEmptyDirectoryIsRefusedWithoutOverwrite() throws {
    let keep = scratch.appendingPathComponent("notes.txt")
    try "mine".write(to: keep, atomically: true, encoding: .utf8)
    XCTAssertThrowsError(try SyntheticDataset.generate(out: scratch.path, images: 2, seed: 1)) { error in
      XCTAssertTrue("\(error)".contains("is not empty"), "\(error)")
      XCTAssertTrue("\(error)".contains("--overwrite"), "\(error)")
    }
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["notes.txt"])
    _ = try SyntheticDataset.generate(out: scratch.path, images: 5, seed: 1, valFraction: 0, overwrite: true)
    _ = try SyntheticDataset.generate(out: scratch.path, images: 2, seed: 1, valFraction: 0, overwrite: true)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.appendingPathComponent("train").path).sorted(), ["000001.png", "000002.png"])
    XCTAssertEqual(try String(contentsOf: keep, encoding: .utf8), "mine", "other files are left alone")

    let file = scratch.appendingPathComponent("notes.txt").path
    XCTAssertThrowsError(try SyntheticDataset.generate(out: file, images: 1, seed: 1, overwrite: true)) { error in
      XCTAssertTrue("\(error)".contains("not a directory"), "\(error)")
    }
    XCTAssertThrowsError(try SyntheticDataset.generate(out: scratch.appendingPathComponent("x").path, images: 0, seed: 1))
    XCTAssertThrowsError(try SyntheticDataset.generate(out: scratch.appendingPathComponent("x").path, images: 1, seed: 1, valFraction: 1))
  }

  /// Writes pictures with their boxes (objects in class colours, distractors captioned `~kind` in
  /// grey) to `DISTILL_SYNTH_GALLERY` for a person to look at.
  func testGallery() throws {
    guard let directory = ProcessInfo.processInfo.environment["DISTILL_SYNTH_GALLERY"] else {
      throw XCTSkip("writes a gallery only when DISTILL_SYNTH_GALLERY names a directory")
    }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for index in 0..<6 {
      let scene = try SyntheticDataset.scene(seed: 1, index: index)
      let objects = scene.objects.filter(\.annotated).map { object in
        DrawnBox(
          x1: Double(object.box!.x), y1: Double(object.box!.y), x2: Double(object.box!.x + object.box!.width),
          y2: Double(object.box!.y + object.box!.height), caption: SyntheticDataset.classNames[object.classIndex], classIndex: object.classIndex)
      }
      let distractors = scene.distractors.map { d in
        DrawnBox(x1: Double(d.box.x), y1: Double(d.box.y), x2: Double(d.box.x + d.box.width), y2: Double(d.box.y + d.box.height), caption: "~\(d.kind.rawValue)", classIndex: 7)
      }
      try Drawing.write(scene.image, boxes: [], to: "\(directory)/\(index)-plain.png", scale: 2)
      try Drawing.write(scene.image, boxes: objects + distractors, to: "\(directory)/\(index)-boxes.png", scale: 2)
    }
  }

  private func run(_ executable: String, _ arguments: [String]) -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    do { try process.run() } catch { return (-1, "\(error)") }
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
  }
}
