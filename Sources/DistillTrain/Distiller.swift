import DistillCore
import DistillDetection
import DistillONNX
import Foundation

/// A distillation run prepared from a `DistillConfig`: both models read and checked (inputs,
/// taps with the closest names when unknown, tap shapes from one forward pass of each model at
/// the training batch size), the loss graph built, the data source opened, and a `Trainer` for
/// the student whose loss is the `DistillationLoss`.
public final class Distiller {
  public let config: DistillConfig
  public let studentModel: Model
  public let loss: DistillationLoss
  public let trainer: Trainer
  public let inputSize: (height: Int, width: Int)
  public let samples: Int
  private let batchSource: BatchSource

  /// Data-parallel (`parallel`), the process reads, and its models run on, its slice of each batch
  /// only; the data must be the same on every process (checked against process 0's).
  public init(config: DistillConfig, options: RunOptions, parallel: DataParallel? = nil) throws {
    self.config = config
    var problems: [String] = []
    func read(_ path: String, _ role: String) -> Model? {
      do { return try ModelFile.read(path) } catch {
        problems.append("\(role) \(path): \(error)")
        return nil
      }
    }
    let teacherRead = read(config.teacher, "teacher"), studentRead = read(config.student, "student")
    guard let teacherModel = teacherRead, let studentModel = studentRead else { throw ConfigProblems(file: config.file, problems: problems) }
    self.studentModel = studentModel
    let teacherGraph = teacherModel.graph!, studentGraph = studentModel.graph!

    func imageInput(_ graph: Graph, _ role: String, named: String?) -> ValueInfo? {
      let inputs = graph.inputs.filter { input in !graph.initializers.contains { $0.name == input.name } }
      if let named {
        if let found = inputs.first(where: { $0.name == named }) { return found }
        if role == "student" { problems.append("data.input: the student has no input '\(named)'; inputs: \(inputs.map(\.name).joined(separator: ", "))") }
      }
      guard inputs.count == 1 else {
        problems.append("the \(role) has \(inputs.count) inputs (\(inputs.map(\.name).joined(separator: ", "))); the images must be its only input")
        return nil
      }
      return inputs[0]
    }
    let studentInput = imageInput(studentGraph, "student", named: config.data.input)
    let teacherInput = imageInput(teacherGraph, "teacher", named: config.data.input)
    var size = config.data.size
    if size == nil, let declared = studentInput?.type?.shape?.map({ $0.size.map(Int.init) }), declared.count == 4,
      let h = declared[2], let w = declared[3]
    {
      size = (h, w)
    }
    if size == nil, config.data.tensors == nil {
      problems.append("data.size: the student's input has no fixed height and width; give data.size: [height, width]")
    }
    func checkTaps(_ taps: [String], _ graph: Graph, _ role: String, _ path: String) {
      let values = Set(graph.nodes.flatMap(\.outputs) + graph.inputs.map(\.name) + graph.initializers.compactMap(\.name))
      for tap in taps where !values.contains(tap) {
        let closest = values.sorted().map { ($0, ConfigReader.editDistance(tap, $0)) }.sorted { $0.1 < $1.1 }.prefix(3).map { "'\($0.0)'" }
        problems.append("\(path): the \(role) computes no value '\(tap)'; closest: \(closest.joined(separator: ", ")) (distill inspect lists them)")
      }
    }
    for (index, loss) in config.losses.enumerated() {
      checkTaps(loss.teacher, teacherGraph, "teacher", "losses[\(index)].teacher")
      checkTaps(loss.student, studentGraph, "student", "losses[\(index)].student")
    }
    do {
      let setup = MethodSetup(
        teacherHead: try config.teacherHead.map { try HeadConfig(yaml: $0) }, studentHead: try config.studentHead.map { try HeadConfig(yaml: $0) })
      for (index, loss) in config.losses.enumerated() {
        let method = try DistillationMethods.make(loss, setup: setup)
        let extra = method.extraTaps
        checkTaps(extra.teacher, teacherGraph, "teacher", "losses[\(index)] (from the teacher's head config)")
        checkTaps(extra.student, studentGraph, "student", "losses[\(index)] (from the student's head config)")
        if let rerun = method.rerun {
          checkTaps([rerun.replacing], studentGraph, "student", "losses[\(index)] \(rerun.source)")
          checkTaps([rerun.teacherTap], teacherGraph, "teacher", "losses[\(index)] \(rerun.source)")
        }
      }
    } catch {
      problems.append("\(error)")
    }
    for path in [config.data.images, config.data.annotations, config.data.tensors].compactMap({ $0 })
    where !FileManager.default.fileExists(atPath: path) {
      problems.append("data: \(path) does not exist")
    }
    guard problems.isEmpty, let studentInput, let teacherInput else { throw ConfigProblems(file: config.file, problems: problems) }

    let setup = MethodSetup(
      teacherHead: try config.teacherHead.map { try HeadConfig(yaml: $0) }, studentHead: try config.studentHead.map { try HeadConfig(yaml: $0) })
    let methods = try config.losses.map { try DistillationMethods.make($0, setup: setup) }
    let taskOutputs = config.taskWeight != nil ? HeadDecoder(setup.studentHead!).outputNames : []
    let reruns = methods.compactMap(\.rerun)
    let studentTaps = Set(config.losses.flatMap(\.student) + methods.flatMap(\.extraTaps.student) + taskOutputs + reruns.map(\.replacing))
    let teacherTaps = Set(config.losses.flatMap(\.teacher) + methods.flatMap(\.extraTaps.teacher) + reruns.map(\.teacherTap))
    let teacherDecoder = setup.teacherHead.map { HeadDecoder($0) }
    let teacher = try Interpreter(model: teacherModel, keep: teacherTaps.union(teacherDecoder?.outputNames ?? []))
    // Nothing reads the teacher's weights but its interpreter, which holds them decoded.
    teacher.releaseInitializerData()
    trainer = try Trainer(
      model: studentModel, config: config.training, keep: studentTaps, loss: PendingLoss(), options: options,
      batches: { _, _ in Batch(feeds: [:]) })

    // The data, then one forward pass of each model for the taps' shapes.
    let warn = options.warn
    batchSource = try BatchSource(config: config, inputName: studentInput.name, size: size, slice: parallel?.slice, warn: { warn($0) })
    samples = batchSource.count
    guard samples >= config.batch else {
      throw ConfigProblems(file: config.file, problems: ["data: \(samples) samples, fewer than one batch of train.batch \(config.batch)"])
    }
    if let parallel, parallel.size > 1 {
      var reference = Array(batchSource.fingerprint.utf8)
      try parallel.communicator.broadcast(&reference, root: 0)
      let theirs = String(decoding: reference, as: UTF8.self)
      guard theirs == batchSource.fingerprint else {
        throw TrainingError.invalidConfig(
          "the data differs from process 0's (here \(batchSource.fingerprint), there \(theirs)): every host must see the same data at the same path")
      }
    }
    inputSize = batchSource.inputSize
    let rows = parallel?.slice.count ?? config.batch
    let probe = Tensor(shape: [rows, 3, inputSize.height, inputSize.width], floats: [Float](repeating: 0.5, count: rows * 3 * inputSize.height * inputSize.width))
    let teacherShapes = try teacher.run([teacherInput.name: probe], taps: teacherTaps).taps.mapValues(\.shape)
    let studentShapes = try trainer.interpreter.run([studentInput.name: probe], taps: studentTaps).taps.mapValues(\.shape)
    var task: (loss: TaskLoss, weight: Float)?
    if let weight = config.taskWeight, let head = setup.studentHead {
      task = (try TaskLoss(config: head, outputShapes: studentShapes.filter { taskOutputs.contains($0.key) }), weight)
    }
    loss = try DistillationLoss(
      losses: config.losses, teacher: teacher, teacherInput: teacherInput.name, studentInput: studentInput.name,
      teacherShapes: teacherShapes, studentShapes: studentShapes, seed: config.seed, inputSize: inputSize,
      pseudoLabels: teacherDecoder.map { ($0, config.pseudoLabelScore) }, setup: setup, task: task)
    trainer.replace(loss: loss, batches: batchSource.batch)
    trainer.parallel = parallel
  }

  /// `student.onnx` with the trained weights: the student's graph unchanged but its weights (and
  /// untied copies of parameters the exporter had merged); adapters and the loss graph are not in it.
  public func exportStudent(to path: String, protecting: [String] = []) throws {
    let (model, _) = try TrainedWeights.apply(trainer.checkpoint(), to: studentModel)
    try ModelFile.write(model, to: path, protecting: protecting + [config.student, config.teacher])
  }
}

/// Stands in for the distillation loss while the trainer is prepared (the loss needs the
/// trainer's interpreter to measure the student's taps).
private struct PendingLoss: TrainingLoss {
  func evaluate(_ tape: Tape, _ batch: Batch) throws -> LossEvaluation {
    throw TrainingError.invalidConfig("the distillation loss is not ready")
  }
}

/// Batches of images (augmented, from a COCO annotation file or a label-free image directory) or
/// of preprocessed tensors, by step: step `s` is batch `s % perEpoch` of epoch `s / perEpoch`,
/// shuffled from the seed, so any step's batch is the same whether a run resumed or not.
final class BatchSource: @unchecked Sendable {
  let count: Int
  let inputSize: (height: Int, width: Int)
  private let inputName: String
  private let loader: BatchLoader?
  private let tensorFiles: [String]
  private let batchSize: Int
  /// The positions within each batch this process reads (all of them on one process).
  private let slice: Range<Int>
  /// The sample count and a hash of the sample files' names, to check that processes agree.
  let fingerprint: String
  private let shuffle: Bool
  /// Whether the images have annotations; label-free batches carry none, so losses that need
  /// objects get the teacher's pseudo-labels.
  private let annotated: Bool
  private let seed: UInt64
  private var epochBatches: EpochBatches?
  private var expected: (epoch: Int, index: Int)?

  init(
    config: DistillConfig, inputName: String, size: (height: Int, width: Int)?, slice: Range<Int>? = nil,
    warn: @escaping @Sendable (String) -> Void
  ) throws {
    self.inputName = inputName
    annotated = config.data.annotations != nil
    batchSize = config.batch
    self.slice = slice ?? 0..<config.batch
    func fingerprint(_ count: Int, _ names: [String]) -> String {
      var hasher = FNV1a64()
      for name in names { hasher.add(Array(URL(fileURLWithPath: name).lastPathComponent.utf8) + [0]) }
      return "\(count) samples, names hashed to \(String(format: "%016llx", hasher.value))"
    }
    shuffle = config.data.shuffle
    seed = config.seed
    if let directory = config.data.tensors {
      let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".pb") || $0.hasSuffix(".npy") }.sorted()
      guard let first = files.first else { throw TrainingError.invalidConfig("data.tensors: \(directory) holds no .pb or .npy files") }
      tensorFiles = files.map { URL(fileURLWithPath: directory).appendingPathComponent($0).path }
      let sample = try Self.readTensor(tensorFiles[0])
      let shape = sample.shape.count == 4 ? Array(sample.shape.dropFirst()) : sample.shape
      guard shape.count == 3 else { throw TrainingError.invalidConfig("data.tensors: \(first) is \(sample.shapeDescription), expected [C,H,W] or [1,C,H,W]") }
      inputSize = (shape[1], shape[2])
      loader = nil
      count = files.count
      self.fingerprint = fingerprint(count, files)
      return
    }
    tensorFiles = []
    guard let images = config.data.images, let size else { throw TrainingError.invalidConfig("data: no images") }
    inputSize = size
    let source: any DetectionSource
    var names: [String] = []
    if let annotations = config.data.annotations {
      source = try COCOAnnotations.load(annotations).source(imageDirectory: images)
    } else {
      let files = try FileManager.default.contentsOfDirectory(atPath: images)
        .filter { [".png", ".jpg", ".jpeg"].contains(where: $0.lowercased().hasSuffix) }.sorted()
      guard !files.isEmpty else { throw TrainingError.invalidConfig("data.images: \(images) holds no PNG or JPEG images") }
      names = files
      let entries = files.map { ListedImageSource.Entry(path: URL(fileURLWithPath: images).appendingPathComponent($0).path, boxes: [], labels: []) }
      source = try ListedImageSource(entries: entries, classNames: [])
    }
    let options = AugmentOptions(
      width: size.width, height: size.height, fit: config.data.letterbox ? .letterbox : .stretch, flipProbability: config.data.hflip,
      scaleJitter: config.data.scale, mean: config.data.mean, std: config.data.std)
    let warn = warn
    loader = BatchLoader(
      source: source, augmenter: Augmenter(options), batchSize: config.batch, seed: config.seed, shuffle: config.data.shuffle, dropLast: true,
      prefetch: 1, skipUnreadable: { warn($0) }, slice: slice)
    count = source.count
    self.fingerprint = fingerprint(count, names)
  }

  var perEpoch: Int { max(1, count / batchSize) }

  /// The batch of 0-based `step`; the next one is prepared in the background meanwhile.
  func batch(_ step: Int, _ random: inout SplitMix64) throws -> Batch {
    let epoch = step / perEpoch, index = step % perEpoch
    guard let loader else { return try tensorBatch(epoch: epoch, index: index) }
    if expected == nil || expected! != (epoch, index) || epochBatches == nil {
      epochBatches?.close()
      epochBatches = loader.epoch(epoch)
      for _ in 0..<index { _ = try epochBatches!.next() }
    }
    guard let batch = try epochBatches!.next() else { throw TrainingError.invalidConfig("epoch \(epoch) ended early") }
    expected = index + 1 < perEpoch ? (epoch, index + 1) : (epoch + 1, 0)
    if index + 1 >= perEpoch { epochBatches?.close(); epochBatches = nil }
    var result = Batch(feeds: [inputName: batch.images])
    if annotated { result.annotations = batch.targets }
    return result
  }

  private func tensorBatch(epoch: Int, index: Int) throws -> Batch {
    var order = Array(0..<count)
    if shuffle {
      var random = SplitMix64(seed: seed).derived(UInt64(epoch), 0x7465_6e73)
      for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(random.next() % UInt64(i + 1))) }
    }
    var values: [Float] = []
    var sampleShape: [Int] = []
    for position in (index * batchSize + slice.lowerBound)..<(index * batchSize + slice.upperBound) {
      let tensor = try Self.readTensor(tensorFiles[order[position]])
      let shape = tensor.shape.count == 4 ? Array(tensor.shape.dropFirst()) : tensor.shape
      if sampleShape.isEmpty { sampleShape = shape } else if shape != sampleShape {
        throw TrainingError.invalidConfig("data.tensors: \(tensorFiles[order[position]]) is \(tensor.shapeDescription), others are \(sampleShape)")
      }
      values += tensor.floats
    }
    return Batch(feeds: [inputName: Tensor(shape: [slice.count] + sampleShape, floats: values)])
  }

  static func readTensor(_ path: String) throws -> Tensor {
    path.hasSuffix(".npy") ? try NumpyFile.read(path) : try Tensor(ModelFile.readTensor(path))
  }
}
