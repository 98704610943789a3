//! Following a listing's pages: one page by default, `--all` for every page.

use clap::Args;

#[derive(Args)]
pub struct PageArgs {
    /// Results per page.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// Continue from the token the previous page printed.
    #[arg(long)]
    page_token: Option<String>,
    /// Follow every page.
    #[arg(long)]
    all: bool,
}

impl PageArgs {
    /// The token of the page to fetch next, if any; tells the person how to continue when
    /// not following every page.
    pub fn next(&self, token: String) -> Option<String> {
        if token.is_empty() {
            None
        } else if self.all {
            Some(token)
        } else {
            eprintln!("more results: add --page-token {token} (or --all)");
            None
        }
    }

    pub fn size(&self) -> u32 {
        self.page_size
    }

    pub fn first_token(&self) -> String {
        self.page_token.clone().unwrap_or_default()
    }
}
