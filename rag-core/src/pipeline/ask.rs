use crate::types::{Filter, GenerationParams, SessionId, UserContext};

/// One question for a conversation.
///
/// The session id is validated when it is made ([`SessionId::new`]); the question and the
/// params are checked by [`crate::Pipeline::ask`] before any backend is called.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Ask {
    /// The conversation, with its owner: the history is read and saved in the owner's
    /// namespace ([`SessionId::owned_by`]).
    pub session: SessionId,
    /// The question.
    pub question: String,
    /// Inference settings for this ask; the pipeline's defaults when `None`.
    pub params: Option<GenerationParams>,
    /// The asking user, passed to the retriever for access control. Its `user_id`, when set,
    /// must be the session's owner.
    pub user: Option<UserContext>,
    /// A document filter passed to the retriever.
    pub filter: Option<Filter>,
    /// Passages to retrieve for this ask; the pipeline's `top_k` when `None`.
    pub top_k: Option<usize>,
}

impl Ask {
    /// `question` in `session`, with the pipeline's defaults.
    pub fn new(session: SessionId, question: impl Into<String>) -> Self {
        Ask {
            session,
            question: question.into(),
            params: None,
            user: None,
            filter: None,
            top_k: None,
        }
    }

    /// Overrides the inference settings.
    pub fn with_params(mut self, params: GenerationParams) -> Self {
        self.params = Some(params);
        self
    }

    /// Sets the asking user.
    pub fn with_user(mut self, user: UserContext) -> Self {
        self.user = Some(user);
        self
    }

    /// Sets a document filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Overrides how many passages to retrieve.
    pub fn with_top_k(mut self, top_k: usize) -> Self {
        self.top_k = Some(top_k);
        self
    }
}
