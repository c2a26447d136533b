import DistillDetection
import Foundation

/// `report.html` of `distill demo`: one self-contained page with the results table, the loss and
/// mAP curves of both runs as inline SVG, and the pictures embedded as data URLs.
struct DemoReport {
  let teacher: COCOEvaluation
  let initial: COCOEvaluation
  let baseline: Demo.Run
  let distilled: Demo.Run
  /// PNG paths relative to the demo's output directory (read from `directory`).
  let pictures: [String]
  let laps: [(String, Double)]
  let settings: String
  /// The demo's output directory, where `pictures` are read from.
  let directory: String

  var rows: [(String, COCOEvaluation)] {
    [("teacher", teacher), ("student, starting point", initial), ("student, baseline (task loss)", baseline.final),
     ("student, distilled (task + FGD + KD)", distilled.final)]
  }

  /// The results as a plain-text table for the terminal.
  func table() -> String {
    func pad(_ text: String) -> String { text.padding(toLength: 38, withPad: " ", startingAt: 0) }
    var lines = ["", pad("model") + "      mAP     AP50     AP75     AP_S"]
    for (name, score) in rows {
      lines.append(pad(name) + String(format: " %8.3f %8.3f %8.3f %8.3f", score.map, score.ap50, score.ap75, score.apSmall))
    }
    return lines.joined(separator: "\n")
  }

  func html() -> String {
    let gain = (distilled.final.map - baseline.final.map) * 100
    var body = "<h1>distill demo</h1>\n<p>\(escape(settings)). Distillation \(gain >= 0 ? "beats" : "trails") the baseline by <b>\(String(format: "%.1f", abs(gain))) AP</b> (COCO mAP@[.5:.95] on the validation split).</p>\n"
    body += "<table><tr><th>model</th><th>mAP</th><th>AP50</th><th>AP75</th><th>AP small</th><th>AP medium</th><th>AP large</th></tr>\n"
    for (name, score) in rows {
      body += "<tr><td>\(escape(name))</td>" + [score.map, score.ap50, score.ap75, score.apSmall, score.apMedium, score.apLarge].map { "<td>\(String(format: "%.3f", $0))</td>" }.joined() + "</tr>\n"
    }
    body += "</table>\n<h2>AP per class</h2>\n<table><tr><th>class</th>" + rows.map { "<th>\(escape($0.0))</th>" }.joined() + "</tr>\n"
    for (index, entry) in teacher.perClass.enumerated() {
      body += "<tr><td>\(escape(entry.name))</td>" + rows.map { row in
        index < row.1.perClass.count ? "<td>\(String(format: "%.3f", row.1.perClass[index].ap))</td>" : "<td></td>"
      }.joined() + "</tr>\n"
    }
    body += "</table>\n<h2>Training</h2>\n<div class=\"charts\">"
    body += chart(title: "loss (task loss for the baseline; task + distillation for the distilled run)", series: [("baseline", baseline.losses), ("distilled", distilled.losses)])
    body += chart(title: "validation mAP", series: [("baseline", baseline.maps), ("distilled", distilled.maps)])
    body += "</div>\n<h2>Detections on validation pictures (score &ge; 0.3): baseline left, distilled right</h2>\n"
    for picture in pictures {
      if let data = FileManager.default.contents(atPath: directory + "/" + picture) {
        body += "<p><img alt=\"\(escape(picture))\" src=\"data:image/png;base64,\(data.base64EncodedString())\"></p>\n"
      }
    }
    body += "<h2>Time</h2>\n<table>" + laps.map { "<tr><td>\(escape($0.0))</td><td>\(String(format: "%.0f s", $0.1))</td></tr>" }.joined() + "</table>\n"
    let style = """
      body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222}
      table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
      td:first-child,th:first-child{text-align:left}img{max-width:100%}.charts{display:flex;gap:24px;flex-wrap:wrap}
      """
    return "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>distill demo</title><style>\(style)</style></head><body>\n\(body)</body></html>\n"
  }

  /// A line chart of each series (step, value), with axes and a legend.
  func chart(title: String, series: [(String, [(Int, Double)])]) -> String {
    let width = 520.0, height = 300.0, left = 56.0, right = 12.0, top = 28.0, bottom = 36.0
    let points = series.flatMap(\.1)
    guard !points.isEmpty else { return "" }
    let maxStep = Double(points.map(\.0).max() ?? 1), minValue = min(0, points.map(\.1).min() ?? 0)
    let maxValue = max(points.map(\.1).max() ?? 1, minValue + 1e-9)
    func x(_ step: Int) -> Double { left + (width - left - right) * Double(step) / max(maxStep, 1) }
    func y(_ value: Double) -> Double { top + (height - top - bottom) * (1 - (value - minValue) / (maxValue - minValue)) }
    let colors = ["#d62728", "#1f77b4"]
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
    svg += "<text x=\"\(left)\" y=\"16\" font-size=\"13\">\(escape(title))</text>"
    svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
    svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
    for tick in 0...4 {
      let value = minValue + (maxValue - minValue) * Double(tick) / 4
      svg += "<text x=\"\(left - 6)\" y=\"\(y(value) + 4)\" font-size=\"11\" text-anchor=\"end\">\(String(format: "%.3g", value))</text>"
      let step = Int(maxStep * Double(tick) / 4)
      svg += "<text x=\"\(x(step))\" y=\"\(height - bottom + 16)\" font-size=\"11\" text-anchor=\"middle\">\(step)</text>"
    }
    svg += "<text x=\"\((left + width) / 2)\" y=\"\(height - 4)\" font-size=\"11\" text-anchor=\"middle\">step</text>"
    for (index, (name, values)) in series.enumerated() {
      let color = colors[index % colors.count]
      let path = values.map { "\(String(format: "%.1f", x($0.0))),\(String(format: "%.1f", y($0.1)))" }.joined(separator: " ")
      svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(path)\"/>"
      if values.count < 30 {
        for (step, value) in values { svg += "<circle cx=\"\(x(step))\" cy=\"\(y(value))\" r=\"3\" fill=\"\(color)\"/>" }
      }
      svg += "<text x=\"\(width - right - 90)\" y=\"\(top + 14 + Double(index) * 16)\" font-size=\"12\" fill=\"\(color)\">\(escape(name))</text>"
    }
    return svg + "</svg>"
  }

  func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
      .replacingOccurrences(of: "\"", with: "&quot;")
  }
}
