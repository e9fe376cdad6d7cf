#pragma once
// Films of a RenderSession at a given pass, for saves: "generation g at N samples per pixel"
// is a promise that resolves once the session's film holds exactly that (its film is copied
// then), or says why it never will. The session's owner feeds it the session's events
// (settle() after a pass, a stop, or an update), so the decision is made on the loop, at the
// moment the film holds the samples: a save never races a later pass.
//
//   SessionFilms films(session);
//   films.at(session.generation(), 16).then([](SessionFilm f) { ... f.film ... });
//   events.onPass = [&](...) { films.settle(); };
//
// Threads: the session's loop thread only.

#include <kj/async.h>

#include <cstdint>
#include <list>
#include <optional>
#include <memory>
#include <string>

#include "core/render/film.h"

namespace pl {

class RenderSession;

struct SessionFilm {
  enum class Outcome {
    ok,        // `film` holds the samples asked for
    replaced,  // an update started another generation first
    passed,    // the generation went past them, or its passes do not stop there (a restart to
               // them gives them)
    stopped,   // the time limit ended the generation before them
    refused,   // the holder of the films would not hand this one over (a bound)
  };
  Outcome outcome = Outcome::ok;
  std::string message;  // for people, when not ok
  uint64_t generation = 0;
  uint32_t spp = 0;  // the film's samples per pixel (the most any pixel holds)
  std::shared_ptr<const Film> film;  // ok only
};

class SessionFilms {
 public:
  // `session` must outlive this object; destroying it drops the promises it made.
  explicit SessionFilms(const RenderSession& session) : session_(session) {}
  SessionFilms(const SessionFilms&) = delete;
  SessionFilms& operator=(const SessionFilms&) = delete;

  // The film of `generation` once it holds exactly `spp` samples per pixel; spp 0: once the
  // generation is finished (its target, or where the time limit ended it). Settled at once
  // when it can be.
  kj::Promise<SessionFilm> at(uint64_t generation, uint32_t spp);
  // Resolves what the session's state now decides (those that get the film share one copy).
  // Call after each of its passes and stops, and after each update.
  void settle();
  size_t waiting() const { return waiters_.size(); }

 private:
  struct Waiter {
    uint64_t generation;
    uint32_t spp;
    kj::Own<kj::PromiseFulfiller<SessionFilm>> fulfiller;
  };
  // The outcome for `w` now (without its film), or nothing while it must wait.
  std::optional<SessionFilm> decide(const Waiter& w) const;

  const RenderSession& session_;
  std::list<Waiter> waiters_;
};

}  // namespace pl
