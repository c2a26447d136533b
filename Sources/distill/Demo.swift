import ArgumentParser
import DistillCore
import DistillDetection
import DistillONNX
import DistillTrain
import Foundation

struct Demo: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "The whole product on the shipped models: distill the demo teacher into the demo student and show that it wins.",
    discussion: """
      Generates the synthetic shapes task (distill data synth), evaluates the shipped teacher and the \
      starting student, trains a baseline student with the detection loss only and a distilled student \
      with the same loss plus distillation from the teacher (same data, steps and seed), evaluates both \
      during and after training, and writes into OUT: results.json, student.onnx (the distilled one), \
      the two runs (metrics.jsonl, TensorBoard events), pictures of both students' detections side by \
      side, and report.html.
      """)

  @Option(name: .long, help: "Where to write everything.") var out: String = "runs/demo"
  @Option(name: .long, help: "Pictures to generate (train and val).") var images: Int = 1500
  @Option(name: .long, help: "The seed of the data and of both runs.") var seed: UInt64 = 0
  @Option(name: .long, help: "Training steps of each run.") var steps: Int = 600
  @Option(name: .long, help: "Images per step.") var batch: Int = 8
  @Option(name: .long, help: "Evaluate both students every this many steps (0: only at the end).") var evalEvery: Int = 150
  @Option(name: .long, help: "The shipped teacher.") var teacher: String = "models/demo_teacher.onnx"
  @Option(name: .long, help: "The shipped student (its starting point).") var student: String = "models/demo_student.onnx"
  @Option(name: .long, help: "The head config of both models.") var head: String = "models/demo.head.yaml"
  @Flag(name: .long, help: "Replace an earlier demo in OUT.") var overwrite = false

  func validate() throws {
    if images < 20 { throw ValidationError("--images \(images): use at least 20") }
    if steps < 1 || batch < 1 { throw ValidationError("--steps and --batch must be at least 1") }
  }

  func run() throws {
    let clock = DemoClock()
    for path in [teacher, student, head] where !FileManager.default.fileExists(atPath: path) {
      throw RuntimeError("\(path) does not exist; run distill demo from the repository's top directory, or name the files with --teacher, --student and --head")
    }
    let existing = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
    if existing.contains(where: { $0 != "data" }) {
      guard overwrite else { throw RuntimeError("\(out) already holds a demo; replace it with --overwrite") }
      for name in existing where name != "data" { try FileManager.default.removeItem(atPath: out + "/" + name) }
    }
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let headConfig = try HeadConfig.load(head)
    let size = try modelSize(teacher)

    // 1. Data (kept between runs with the same arguments).
    let data = out + "/data"
    let marker = data + "/.generated"
    let signature = "images \(images) seed \(seed) size \(size.height)"
    if (try? String(contentsOfFile: marker, encoding: .utf8)) != signature {
      stage("data: generating \(images) pictures of the synthetic shapes task at \(size.height)x\(size.width)")
      let progress = Progress(label: "data: pictures", total: images)
      _ = try SyntheticDataset.generate(
        out: data, images: images, seed: seed, size: size.height, valFraction: 0.2, overwrite: true, progress: { done, _ in progress.update(done) })
      try signature.write(toFile: marker, atomically: true, encoding: .utf8)
    }
    clock.lap("data")
    let validation = try COCOAnnotations.load(data + "/val.json")

    // 2. The shipped models.
    stage("evaluating the teacher and the starting student on \(validation.images.count) validation pictures")
    let teacherScore = try evaluate(modelPath: teacher, headConfig: headConfig, validation: validation, data: data, size: size)
    let initialScore = try evaluate(modelPath: student, headConfig: headConfig, validation: validation, data: data, size: size)
    clock.lap("evaluate shipped models")
    stage(String(format: "teacher mAP %.3f, starting student mAP %.3f", teacherScore.map, initialScore.map))

    // 3-4. Baseline and distilled runs on the same schedule.
    let taps = try featureTaps(size: size)
    let baseline = try train(run: "baseline", recipe: nil, validation: validation, data: data, size: size, headConfig: headConfig)
    clock.lap("baseline run")
    let distilled = try train(run: "distilled", recipe: taps, validation: validation, data: data, size: size, headConfig: headConfig)
    clock.lap("distilled run")

    // 5. Outputs.
    try FileManager.default.copyItem(atPath: out + "/distilled/student.onnx", toPath: out + "/student.onnx")
    let pictures = try drawComparisons(validation: validation, data: data, size: size, headConfig: headConfig)
    clock.lap("pictures")
    let results: [String: Any] = [
      "teacher_map": teacherScore.map, "student_initial_map": initialScore.map, "baseline_map": baseline.final.map,
      "distilled_map": distilled.final.map, "teacher_ap50": teacherScore.ap50, "student_initial_ap50": initialScore.ap50,
      "baseline_ap50": baseline.final.ap50, "distilled_ap50": distilled.final.ap50,
      "per_class": [
        "teacher": perClass(teacherScore), "student_initial": perClass(initialScore), "baseline": perClass(baseline.final),
        "distilled": perClass(distilled.final),
      ],
      "steps": steps, "batch": batch, "seed": seed, "images": images, "seconds": clock.laps.map { ["stage": $0.0, "seconds": $0.1] },
    ]
    let json = try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
    try json.write(to: URL(fileURLWithPath: out + "/results.json"), options: .atomic)
    let report = DemoReport(
      teacher: teacherScore, initial: initialScore, baseline: baseline, distilled: distilled, pictures: pictures, laps: clock.laps,
      settings: "\(steps) steps of batch \(batch), seed \(seed), \(images) pictures at \(size.height)x\(size.width)", directory: out)
    try report.html().write(toFile: out + "/report.html", atomically: true, encoding: .utf8)
    print(report.table())
    let gain = (distilled.final.map - baseline.final.map) * 100
    print(String(format: "distillation %@ the baseline by %.1f AP; wrote %@/report.html, results.json and student.onnx (%.0f s in all)",
                 gain >= 0 ? "beats" : "trails", abs(gain), out, clock.total))
  }

  /// The input height and width the teacher declares.
  func modelSize(_ path: String) throws -> (height: Int, width: Int) {
    let model = try ModelFile.read(path)
    guard let input = model.graph?.inputs.first, let dims = input.type?.shape?.map({ $0.size.map(Int.init) }), dims.count == 4,
      let h = dims[2], let w = dims[3]
    else { throw RuntimeError("\(path): the image input has no fixed height and width") }
    return (h, w)
  }

  /// The FPN levels of both models, matched by stride.
  func featureTaps(size: (height: Int, width: Int)) throws -> (teacher: [String], student: [String]) {
    let teacherSurvey = try StarterConfig.features(try ModelFile.read(teacher), size: size)
    let studentSurvey = try StarterConfig.features(try ModelFile.read(student), size: size)
    var pairs: [(String, String)] = []
    for (stride, name) in teacherSurvey {
      if let match = studentSurvey.first(where: { $0.stride == stride }) { pairs.append((name, match.name)) }
    }
    guard !pairs.isEmpty else { throw RuntimeError("the demo models have no feature levels to match by stride") }
    return (pairs.map(\.0), pairs.map(\.1))
  }

  func evaluate(modelPath: String, headConfig: HeadConfig, validation: COCOAnnotations, data: String, size: (height: Int, width: Int)) throws
    -> COCOEvaluation
  {
    let model = try ModelFile.read(modelPath)
    let interpreter = try Interpreter(model: model, keep: Set(HeadDecoder(headConfig).outputNames))
    return try evaluate(interpreter, headConfig: headConfig, validation: validation, data: data, size: size)
  }

  func evaluate(_ interpreter: Interpreter, headConfig: HeadConfig, validation: COCOAnnotations, data: String, size: (height: Int, width: Int))
    throws -> COCOEvaluation
  {
    let detector = Detector(
      interpreter: interpreter, head: headConfig, inputName: interpreter.requiredInputs[0].name,
      options: AugmentOptions(width: size.width, height: size.height, fit: .stretch))
    let results = try cocoDetections(detector, annotations: validation, images: data + "/val", batch: 16, label: nil)
    return try COCOEvaluator(annotations: validation).evaluate(results)
  }

  struct Run {
    let name: String
    let final: COCOEvaluation
    /// (step, loss) of every step, and (step, mAP) of every evaluation.
    let losses: [(Int, Double)]
    let maps: [(Int, Double)]
  }

  /// Trains the student for `steps` with the task loss, plus (with `recipe`) FGD on the FPN levels and
  /// KD on the class maps; evaluates it every `evalEvery` steps.
  func train(
    run name: String, recipe: (teacher: [String], student: [String])?, validation: COCOAnnotations, data: String,
    size: (height: Int, width: Int), headConfig: HeadConfig
  ) throws -> Run {
    let directory = out + "/" + name
    let root = FileManager.default.currentDirectoryPath
    func absolute(_ path: String) -> String { path.hasPrefix("/") ? path : root + "/" + path }
    let headText = try String(contentsOfFile: head, encoding: .utf8).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
    var losses = "losses: []"
    if let recipe {
      let classes = ["cls_p3", "cls_p4", "cls_p5"]
      losses = """
        losses:
          - {type: fgd, teacher: [\(recipe.teacher.map { "\"\($0)\"" }.joined(separator: ", "))], student: [\(recipe.student.map { "\"\($0)\"" }.joined(separator: ", "))],
             temperature: 0.8, alpha: 1.6e-3, beta: 8.0e-4, gamma: 8.0e-4, lambda: 8.0e-6}
          - {type: kd, teacher: [\(classes.joined(separator: ", "))], student: [\(classes.joined(separator: ", "))], activation: sigmoid, weight: 5.0}
        """
    }
    let yaml = """
      # \(name == "baseline" ? "The baseline: the detection loss alone." : "Distillation: the detection loss plus FGD and KD from the teacher.")
      teacher: \(absolute(teacher))
      student: \(absolute(student))
      data: {images: \(absolute(data))/train, annotations: \(absolute(data))/train.json, size: [\(size.height), \(size.width)], augment: {hflip: 0.5}}
      bn: train
      head:
      \(headText)
      task: {weight: 1.0}
      \(losses)
      train: {steps: \(steps), batch: \(batch), seed: \(seed), optimizer: {type: sgd, lr: 0.02, momentum: 0.9, weight_decay: 1.0e-4},
              schedule: {type: cosine, warmup: \(max(1, min(50, steps / 10)))}, clip_grad_norm: 35}
      output: \(absolute(directory))
      """
    let configPath = out + "/\(name).yaml"
    try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
    let config = try DistillConfig.load(configPath)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var options = RunOptions(checkpointPath: directory + "/checkpoint", logPath: directory + "/metrics.jsonl")
    options.warn = { stage("warning: " + $0) }
    stage("\(name): preparing")
    let distiller = try Distiller(config: config, options: options)
    let trainer = distiller.trainer
    let board = try TensorBoardWriter(directory: directory)
    var lossTrace: [(Int, Double)] = [], mapTrace: [(Int, Double)] = []
    let initial = try trainer.initialReport()
    try trainer.log(initial)
    lossTrace.append((0, Double(initial.loss)))
    let start = ContinuousClock.now
    for _ in 0..<steps {
      let report = try trainer.trainStep()
      lossTrace.append((report.step, Double(report.loss)))
      var scalars: [String: Double] = ["loss": Double(report.loss), "lr": Double(report.learningRate)]
      for (term, value) in report.terms { scalars["loss/" + term] = Double(value) }
      if evalEvery > 0, report.step % evalEvery == 0, report.step < steps {
        let score = try evaluate(trainer.interpreter, headConfig: headConfig, validation: validation, data: data, size: size)
        mapTrace.append((report.step, score.map))
        scalars["map"] = score.map
      }
      try board.add(scalars: scalars, step: report.step)
      let seconds = (ContinuousClock.now - start) / .seconds(1)
      let rate = Double(report.step) / max(seconds, 1e-9)
      let latest = mapTrace.last.map { String(format: "  mAP %.3f @%d", $0.1, $0.0) } ?? ""
      progress(
        String(format: "%@: step %d/%d  loss %.3f%@  %.2f it/s  ETA %.0f s", name, report.step, steps, report.loss, latest, rate,
               Double(steps - report.step) / max(rate, 1e-9)), final: report.step == steps)
    }
    let final = try evaluate(trainer.interpreter, headConfig: headConfig, validation: validation, data: data, size: size)
    mapTrace.append((steps, final.map))
    try board.add(scalars: ["map": final.map], step: steps)
    try board.close()
    try trainer.saveCheckpoint()
    try distiller.exportStudent(to: directory + "/student.onnx")
    stage(String(format: "%@: mAP %.3f, AP50 %.3f", name, final.map, final.ap50))
    return Run(name: name, final: final, losses: lossTrace, maps: mapTrace)
  }

  /// For a few validation pictures, the baseline's detections (left) and the distilled student's
  /// (right) in one PNG each; returns their paths relative to OUT.
  func drawComparisons(validation: COCOAnnotations, data: String, size: (height: Int, width: Int), headConfig: HeadConfig) throws -> [String] {
    var config = headConfig
    config.scoreThreshold = 0.3
    func detector(_ path: String) throws -> Detector {
      let interpreter = try Interpreter(model: try ModelFile.read(path), keep: Set(HeadDecoder(config).outputNames))
      return Detector(interpreter: interpreter, head: config, inputName: interpreter.requiredInputs[0].name,
                      options: AugmentOptions(width: size.width, height: size.height, fit: .stretch))
    }
    let left = try detector(out + "/baseline/student.onnx"), right = try detector(out + "/distilled/student.onnx")
    let source = try validation.source(imageDirectory: data + "/val")
    try FileManager.default.createDirectory(atPath: out + "/pictures", withIntermediateDirectories: true)
    var written: [String] = []
    let names = config.classNames ?? SyntheticDataset.classNames
    for index in 0..<min(4, source.count) {
      let image = try source.sample(at: index).image
      let gap = 8
      var pixels = [UInt8](repeating: 255, count: (image.width * 2 + gap) * image.height * 3)
      for y in 0..<image.height {
        for copy in [0, image.width + gap] {
          let from = y * image.width * 3, to = (y * (image.width * 2 + gap) + copy) * 3
          pixels.replaceSubrange(to..<(to + image.width * 3), with: image.pixels[from..<(from + image.width * 3)])
        }
      }
      let combined = Image(width: image.width * 2 + gap, height: image.height, pixels: pixels)
      var boxes: [DrawnBox] = []
      for (detector, shift) in [(left, 0.0), (right, Double(image.width + gap))] {
        for item in try detector.detect([image])[0] {
          boxes.append(DrawnBox(x1: Double(item.box.x1) + shift, y1: Double(item.box.y1), x2: Double(item.box.x2) + shift, y2: Double(item.box.y2),
                                caption: String(format: "%@ %.2f", item.classIndex < names.count ? names[item.classIndex] : "class \(item.classIndex)", item.score),
                                classIndex: item.classIndex))
        }
      }
      let file = "pictures/val_\(index + 1).png"
      try Drawing.write(combined, boxes: boxes, to: out + "/" + file, scale: 2)
      written.append(file)
    }
    return written
  }

  func perClass(_ evaluation: COCOEvaluation) -> [String: Double] {
    Dictionary(evaluation.perClass.map { ($0.name, $0.ap) }, uniquingKeysWith: { first, _ in first })
  }
}

/// Wall time per stage of the demo.
final class DemoClock {
  private let start = ContinuousClock.now
  private var last = ContinuousClock.now
  private(set) var laps: [(String, Double)] = []

  func lap(_ name: String) {
    let now = ContinuousClock.now
    laps.append((name, (now - last) / .seconds(1)))
    last = now
  }

  var total: Double { (ContinuousClock.now - start) / .seconds(1) }
}

private func stage(_ line: String) { FileHandle.standardError.write(Data(("demo: " + line + "\n").utf8)) }
