#pragma once
// The `peerlight session` protocol's requests: one JSON object per line on stdin (README,
// "peerlight session"), parsed into typed requests. Parsing only: no file is opened and nothing
// is applied (session_command.cpp carries the requests out). Every field is checked for its type
// and range here, and a request that fails names its field.
//
//   SessionRequest r = parseSessionRequest(line);   // throws RequestError
//   std::visit(..., r.request);

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/scene/scene_edit.h"

namespace pl::app {

// A request that cannot be carried out: the field it names (may be empty) and why.
struct RequestError {
  std::string field;
  std::string message;
};

// Edits are parsed in order up to the first that does not parse: `edits` holds those before it
// and `error` names it (ops[i].field), so that applying them first and then reporting the error
// names the same edit as applying each as it is parsed would.
struct BatchRequest {
  std::vector<SceneEdit> edits;  // at most kMaxBatchOps, each an edit (no batch in a batch)
  std::optional<RequestError> error;
};
struct SaveRequest {
  std::string path;
  std::optional<double> spp;  // as given (a finite number); checked after the path
};
struct StatsRequest {};
struct PeerRequest {
  std::string address;
};
struct QuitRequest {};

struct SessionRequest {
  static constexpr size_t kMaxBatchOps = 4096;
  std::string op;  // "camera", "env", ..., "batch", "save", "stats", "peer", "quit"
  std::variant<SceneEdit, BatchRequest, SaveRequest, StatsRequest, PeerRequest, QuitRequest>
      request;
  std::optional<nlohmann::json> id;  // the request's "id" (null too), echoed in its events
};

// Parses one request line. Throws RequestError for a line that is not a JSON object, an unknown
// op, or a field that is missing, of the wrong type or out of range. `*op` and `*id` (when
// given) are set as soon as they are known, for the error event.
SessionRequest parseSessionRequest(const std::string& line, std::string* op = nullptr,
                                   std::optional<nlohmann::json>* id = nullptr);

// Whether `op` is a scene edit (camera, env, material, transform, visibility).
bool isEditOp(const std::string& op);

}  // namespace pl::app
