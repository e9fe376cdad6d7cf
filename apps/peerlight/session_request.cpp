#include "apps/peerlight/session_request.h"

#include <array>
#include <cmath>

namespace pl::app {

namespace {

using Json = nlohmann::json;

// Field readers: each throws RequestError naming the field.
double number(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) throw RequestError{field, std::string("missing field '") + field + "'"};
  if (!it->is_number()) throw RequestError{field, std::string("'") + field + "' is not a number"};
  const double v = it->get<double>();
  if (!std::isfinite(v)) throw RequestError{field, std::string("'") + field + "' is not finite"};
  return v;
}

std::optional<double> optionalNumber(const Json& j, const char* field) {
  if (!j.contains(field)) return std::nullopt;
  return number(j, field);
}

template <size_t N>
std::array<double, N> numbers(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) throw RequestError{field, std::string("missing field '") + field + "'"};
  if (!it->is_array() || it->size() != N)
    throw RequestError{field, std::string("'") + field + "' must be an array of " +
                                  std::to_string(N) + " numbers"};
  std::array<double, N> out{};
  for (size_t i = 0; i < N; ++i) {
    const Json& v = (*it)[i];
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      throw RequestError{field, std::string("'") + field + "'[" + std::to_string(i) +
                                    "] is not a finite number"};
    out[i] = v.get<double>();
  }
  return out;
}

template <size_t N>
std::optional<std::array<double, N>> optionalNumbers(const Json& j, const char* field) {
  if (!j.contains(field)) return std::nullopt;
  return numbers<N>(j, field);
}

std::string text(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) throw RequestError{field, std::string("missing field '") + field + "'"};
  if (!it->is_string()) throw RequestError{field, std::string("'") + field + "' is not a string"};
  return it->get<std::string>();
}

kernel::Vec3f vec3(const std::array<double, 3>& a) {
  return {float(a[0]), float(a[1]), float(a[2])};
}

CameraEdit camera(const Json& r) {
  CameraEdit edit;
  if (r.contains("camera")) {
    edit.camera = r["camera"].is_number_unsigned() ? std::to_string(r["camera"].get<uint64_t>())
                                                   : text(r, "camera");
    return edit;
  }
  LookAt lookAt;
  if (r.contains("matrix")) {
    const auto m = numbers<16>(r, "matrix");
    std::array<float, 16> f{};
    for (size_t i = 0; i < 16; ++i) f[i] = float(m[i]);
    Result<LookAt> fromMatrix = lookAtFromMatrix(f);
    if (!fromMatrix.ok()) throw RequestError{"matrix", fromMatrix.error().message};
    lookAt = *fromMatrix;
  } else {
    lookAt.eye = vec3(numbers<3>(r, "eye"));
    lookAt.target = vec3(numbers<3>(r, "target"));
    if (r.contains("up")) lookAt.up = vec3(numbers<3>(r, "up"));
  }
  if (auto yfov = optionalNumber(r, "yfov")) lookAt.yfovDegrees = float(*yfov);
  edit.lookAt = lookAt;
  return edit;
}

EnvironmentEdit environment(const Json& r) {
  EnvironmentEdit edit;
  if (r.contains("map")) edit.mapPath = text(r, "map");
  if (auto color = optionalNumbers<3>(r, "color")) edit.color = vec3(*color);
  if (edit.mapPath.empty() && !edit.color)
    throw RequestError{"color", "env needs 'color' [r, g, b] or 'map' (a .hdr/.exr file)"};
  return edit;
}

MaterialEdit material(const Json& r) {
  MaterialEdit edit;
  edit.material = text(r, "name");
  edit.baseColorFactor = optionalNumbers<4>(r, "base_color");
  edit.metallicFactor = optionalNumber(r, "metallic");
  edit.roughnessFactor = optionalNumber(r, "roughness");
  edit.emissiveFactor = optionalNumbers<3>(r, "emissive");
  edit.emissiveStrength = optionalNumber(r, "emissive_strength");
  edit.ior = optionalNumber(r, "ior");
  edit.alphaCutoff = optionalNumber(r, "alpha_cutoff");
  return edit;
}

NodeTransformEdit transform(const Json& r) {
  NodeTransformEdit edit;
  edit.node = text(r, "node");
  edit.worldFromLocal = numbers<16>(r, "matrix");
  return edit;
}

VisibilityEdit visibility(const Json& r) {
  VisibilityEdit edit;
  if (r.contains("node")) edit.node = text(r, "node");
  if (r.contains("mesh")) edit.mesh = text(r, "mesh");
  auto it = r.find("visible");
  if (it == r.end() || !it->is_boolean())
    throw RequestError{"visible", "'visible' must be true or false"};
  edit.visible = it->get<bool>();
  return edit;
}

SceneEdit edit(const std::string& op, const Json& r) {
  if (op == "camera") return camera(r);
  if (op == "env") return environment(r);
  if (op == "material") return material(r);
  if (op == "transform") return transform(r);
  return visibility(r);
}

BatchRequest batch(const Json& r) {
  auto it = r.find("ops");
  if (it == r.end() || !it->is_array() || it->empty() ||
      it->size() > SessionRequest::kMaxBatchOps)
    throw RequestError{"ops", "'ops' must be an array of 1 to " +
                                  std::to_string(SessionRequest::kMaxBatchOps) + " edits"};
  BatchRequest out;
  for (size_t i = 0; i < it->size() && !out.error; ++i) {
    const Json& e = (*it)[i];
    const std::string where = "ops[" + std::to_string(i) + "]";
    try {
      if (!e.is_object()) throw RequestError{"", "not an object"};
      const std::string op = text(e, "op");
      if (!isEditOp(op))
        throw RequestError{"op", "'" + op +
                                     "' cannot be batched (camera, env, material, transform, "
                                     "visibility)"};
      out.edits.push_back(edit(op, e));
    } catch (const RequestError& error) {
      out.error = RequestError{where + (error.field.empty() ? "" : "." + error.field),
                               where + ": " + error.message};
    }
  }
  return out;
}

SaveRequest save(const Json& r) {
  SaveRequest s;
  s.path = text(r, "path");
  s.spp = optionalNumber(r, "spp");
  return s;
}

}  // namespace

bool isEditOp(const std::string& op) {
  return op == "camera" || op == "env" || op == "material" || op == "transform" ||
         op == "visibility";
}

SessionRequest parseSessionRequest(const std::string& line, std::string* opOut,
                                   std::optional<Json>* idOut) {
  const Json r = Json::parse(line, nullptr, false);
  if (r.is_discarded() || !r.is_object())
    throw RequestError{"", "not a JSON object: " + line.substr(0, 200)};
  SessionRequest out;
  if (r.contains("id")) out.id = r["id"];
  if (idOut != nullptr) *idOut = out.id;
  out.op = text(r, "op");
  if (opOut != nullptr) *opOut = out.op;
  const std::string& op = out.op;
  if (isEditOp(op)) out.request = edit(op, r);
  else if (op == "batch") out.request = batch(r);
  else if (op == "save") out.request = save(r);
  else if (op == "stats") out.request = StatsRequest{};
  else if (op == "peer") out.request = PeerRequest{text(r, "address")};
  else if (op == "quit") out.request = QuitRequest{};
  else
    throw RequestError{"op", "unknown op '" + op +
                                 "' (camera, env, material, transform, visibility, batch, save, "
                                 "stats, peer, quit)"};
  return out;
}

}  // namespace pl::app
