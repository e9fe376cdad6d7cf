// One request line of the `peerlight session` protocol (apps/peerlight/session_request.h): any
// bytes either parse into a typed request or throw RequestError; nothing else may happen.
#include <string>

#include "apps/peerlight/session_request.h"
#include "fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string line(reinterpret_cast<const char*>(data), size);
  try {
    (void)pl::app::parseSessionRequest(line);
  } catch (const pl::app::RequestError&) {
  }
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  const char* lines[] = {
      R"({"op":"camera","eye":[0,1,5],"target":[0,1,0],"up":[0,1,0],"yfov":45,"id":1})",
      R"({"op":"camera","matrix":[1,0,0,0,0,1,0,0,0,0,1,0,0,1,5,1]})",
      R"({"op":"camera","camera":0})",
      R"({"op":"env","color":[0.5,0.5,0.5]})",
      R"({"op":"env","map":"sky.hdr","color":[1,1,1]})",
      R"({"op":"material","name":"white","base_color":[1,0,0,1],"metallic":0.5,)"
      R"("roughness":0.2,"emissive":[0,0,0],"emissive_strength":1,"ior":1.5,"alpha_cutoff":0.5})",
      R"({"op":"transform","node":"box","matrix":[1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]})",
      R"({"op":"visibility","mesh":"box","visible":false})",
      R"({"op":"batch","ops":[{"op":"camera","eye":[0,0,3],"target":[0,0,0]},)"
      R"({"op":"visibility","node":"lamp","visible":true}],"id":"f2"})",
      R"({"op":"save","path":"out.exr","spp":16,"id":[1,2]})",
      R"({"op":"stats"})",
      R"({"op":"peer","address":"127.0.0.1:7000"})",
      R"({"op":"quit"})",
  };
  std::vector<std::vector<uint8_t>> out;
  for (const char* line : lines) out.emplace_back(line, line + std::char_traits<char>::length(line));
  return out;
}
